"""WAV sample bytes to numpy frames and back, for every encoding WAV carries."""

from __future__ import annotations

import io

import numpy as np
import pytest

from mimoq.core.audio import WavFormat
from mimoq.core.splitting.pcm import decode, iter_pcm_blocks, to_bytes, to_float, to_s16
from tests.batch.helpers import encode

FORMATS = [
    WavFormat(8_000, 1, 8),
    WavFormat(16_000, 1, 16),
    WavFormat(44_100, 2, 16),
    WavFormat(48_000, 2, 24),
    WavFormat(22_050, 1, 32),
    WavFormat(16_000, 2, 32, 3),
]
RAMP = np.linspace(-0.9, 0.9, 101, dtype=np.float32)


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_decode_then_scale_gives_back_the_signal(fmt: WavFormat) -> None:
    frames = decode(encode(RAMP, fmt), fmt)
    assert frames.shape == (len(RAMP), fmt.channels)
    samples = to_float(frames, fmt)
    step = 2.0 / (1 << fmt.bits_per_sample) if fmt.audio_format == 1 else 1e-7
    assert np.allclose(samples[:, 0], RAMP, atol=step * 2)
    assert np.array_equal(samples[:, 0], samples[:, -1])


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_to_bytes_round_trips(fmt: WavFormat) -> None:
    data = encode(RAMP, fmt)
    assert to_bytes(decode(data, fmt), fmt) == data


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.0, 0.5, -0.5], [0, 16384, -16384]),
        ([1.0, -1.0], [32767, -32768]),
        ([3.0, -3.0], [32767, -32768]),
    ],
)
def test_to_s16_rounds_and_clips(values: list[float], expected: list[int]) -> None:
    assert to_s16(np.array(values, dtype=np.float32)).tolist() == expected


@pytest.mark.parametrize(
    ("data_bytes", "block_frames", "sizes"),
    [(None, 40, [40, 40, 20]), (200, 40, [40, 40, 20]), (120, 1000, [60]), (201, 64, [64, 36])],
)
def test_iter_pcm_blocks_streams_whole_frames(
    data_bytes: int | None, block_frames: int, sizes: list[int]
) -> None:
    fmt = WavFormat(16_000, 1, 16)
    raw = np.arange(100, dtype="<i2").tobytes() + b"\x07"  # a stray half sample at the end
    blocks = list(iter_pcm_blocks(io.BytesIO(raw), fmt, data_bytes, block_frames))
    assert [len(b) for b in blocks] == sizes
    joined = np.concatenate(blocks)[:, 0]
    assert joined.tolist() == list(range(len(joined)))
