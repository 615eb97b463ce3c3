"""WAV recordings split into chunk files: formats, limits, tiling, quiet cuts, conversion."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest

from mimoq.core.audio import WavFormat, parse_wav_header, wav_header
from mimoq.core.splitting.chunks import AudioChunk, UnsupportedAudioError
from mimoq.core.splitting.resample import Converter, split_format
from mimoq.core.splitting.wavsplit import split_wav
from tests.batch.helpers import Chunks, gap_spans, wav_bytes

PLAN = [(3.0 + i % 3, 0.5) for i in range(80)]  # 6 minutes, a pause every 3.5-5.5 s


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (WavFormat(16_000, 1, 16), WavFormat(16_000, 1, 16)),  # already compact: kept
        (WavFormat(8_000, 1, 16), WavFormat(8_000, 1, 16)),  # smaller still: kept
        (WavFormat(8_000, 1, 8), WavFormat(8_000, 1, 8)),  # 8-bit is plain PCM: kept
        (WavFormat(44_100, 2, 16), WavFormat(16_000, 1, 16)),  # CD audio: down-mixed, resampled
        (WavFormat(48_000, 1, 24), WavFormat(16_000, 1, 16)),
        (WavFormat(8_000, 1, 24), WavFormat(8_000, 1, 16)),  # never upsampled
        (WavFormat(16_000, 1, 32, 3), WavFormat(16_000, 1, 16)),  # float: requantized
    ],
    ids=str,
)
def test_split_format(src: WavFormat, dst: WavFormat) -> None:
    assert split_format(src) == dst


def split(
    fmt: WavFormat, max_bytes: int, plan: list[tuple[float, float]] = PLAN
) -> tuple[list[AudioChunk], Chunks]:
    from tests.batch.helpers import tones

    chunks = Chunks()
    data = wav_bytes(tones(fmt.sample_rate, plan), fmt)
    return split_wav(io.BytesIO(data), chunks, max_bytes=max_bytes), chunks


@pytest.mark.parametrize(
    ("fmt", "max_bytes", "count"),
    [
        (WavFormat(16_000, 1, 16), 4_000_000, 3),  # 10.9 MB in chunks of <= 125 s
        (WavFormat(44_100, 2, 16), 4_000_000, 3),  # 59 MB, but 10.9 MB once converted
        (WavFormat(16_000, 1, 16), 12_000_000, 1),  # fits: one chunk, the whole recording
        (WavFormat(8_000, 1, 8), 1_000_000, 3),
        (WavFormat(22_050, 2, 32, 3), 2_000_000, 6),
    ],
    ids=str,
)
def test_chunks_are_under_the_limit_tile_the_recording_and_cut_in_pauses(
    fmt: WavFormat, max_bytes: int, count: int
) -> None:
    spans, chunks = split(fmt, max_bytes)
    dst = split_format(fmt)
    assert [c.index for c in spans] == list(range(count)) == chunks.opened
    total_s = sum(t + g for t, g in PLAN)
    assert spans[0].start_s == 0 and abs(spans[-1].end_s - total_s) < 0.01
    for before, after in itertools.pairwise(spans):
        assert after.start_s == before.end_s
        assert any(a <= before.end_s <= b for a, b in gap_spans(PLAN)), before
    for span in spans:
        data = chunks.data[span.index]
        parsed = parse_wav_header(data)
        assert parsed is not None
        got, offset, size = parsed
        assert got == dst and offset == 44 and size == len(data) - 44
        assert len(data) == span.bytes <= max_bytes
        assert abs(dst.duration_s(size) - (span.end_s - span.start_s)) < 1e-6


def test_unconverted_chunks_are_the_original_samples_byte_for_byte() -> None:
    fmt = WavFormat(16_000, 1, 16)
    from tests.batch.helpers import tones

    data = wav_bytes(tones(16_000, PLAN), fmt)
    chunks = Chunks()
    split_wav(io.BytesIO(data), chunks, max_bytes=3_000_000)
    assert b"".join(chunks.data[i][44:] for i in sorted(chunks.data)) == data[44:]


def test_resampling_keeps_the_tone_and_the_length() -> None:
    fmt = WavFormat(44_100, 2, 16)
    converter = Converter(fmt, WavFormat(16_000, 1, 16))
    t = np.arange(44_100 * 3) / 44_100
    left = (0.5 * np.sin(2 * np.pi * 1000 * t) * 32767).astype(np.int16)
    frames = np.stack([left, left], axis=1)
    out = np.concatenate(
        [converter.convert(frames[i : i + 4410]) for i in range(0, len(frames), 4410)]
        + [converter.flush()]
    )
    assert abs(len(out) - 48_000) <= 2
    spectrum = np.abs(np.fft.rfft(out[:, 0].astype(np.float64)))
    assert abs(np.argmax(spectrum) * 16_000 / len(out) - 1000) < 2
    assert 0.45 < np.abs(out[1000:-1000, 0]).max() / 32767 < 0.55


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"RIFX\x00\x00\x00\x00WAVE", "not a usable WAV"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "truncated WAV"),
        (wav_header(WavFormat(16_000, 1, 16), 0), "no audio"),
    ],
)
def test_unusable_input_is_refused_by_name(data: bytes, says: str) -> None:
    with pytest.raises(UnsupportedAudioError, match=says):
        split_wav(io.BytesIO(data), Chunks(), max_bytes=1_000_000)


def test_a_limit_below_two_seconds_is_a_bug_not_a_split() -> None:
    fmt = WavFormat(16_000, 1, 16)
    with pytest.raises(ValueError, match="less than 2 s"):
        split(fmt, 50_000)
