"""Test audio made here: tones separated by silent gaps at known times, and chunk collectors."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from mimoq.core.audio import WavFormat, wav_header


def tones(
    rate: int, plan: Sequence[tuple[float, float]], *, hz: float = 440.0
) -> npt.NDArray[np.float32]:
    """Mono float audio: for each (tone_s, gap_s), a sine for tone_s then silence for gap_s."""
    parts: list[npt.NDArray[np.float32]] = []
    for tone_s, gap_s in plan:
        t = np.arange(round(tone_s * rate)) / rate
        parts.append((0.25 * np.sin(2 * np.pi * hz * t)).astype(np.float32))
        parts.append(np.zeros(round(gap_s * rate), dtype=np.float32))
    return np.concatenate(parts)


def gap_spans(plan: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (start_s, end_s) of every silent gap of a ``tones`` plan."""
    spans, clock = [], 0.0
    for tone_s, gap_s in plan:
        clock += tone_s
        spans.append((clock, clock + gap_s))
        clock += gap_s
    return spans


def encode(mono: npt.NDArray[np.float32], fmt: WavFormat) -> bytes:
    """``mono`` float audio as the sample bytes of ``fmt`` (every channel the same)."""
    frames = np.repeat(mono[:, None], fmt.channels, axis=1)
    if fmt.audio_format == 3:
        return frames.astype("<f4").tobytes()
    if fmt.bits_per_sample == 8:
        return np.clip(np.rint(frames * 127 + 128), 0, 255).astype("u1").tobytes()
    if fmt.bits_per_sample == 24:
        ints = np.clip(np.rint(frames * 8_388_607), -8_388_608, 8_388_607).astype("<i4")
        return ints.reshape(-1, 1).view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    scale = (1 << (fmt.bits_per_sample - 1)) - 1
    dtype = "<i2" if fmt.bits_per_sample == 16 else "<i4"
    return np.rint(frames * scale).astype(dtype).tobytes()


def wav_bytes(mono: npt.NDArray[np.float32], fmt: WavFormat) -> bytes:
    data = encode(mono, fmt)
    return wav_header(fmt, len(data)) + data


def write_wav(path: Path, mono: npt.NDArray[np.float32], fmt: WavFormat) -> Path:
    path.write_bytes(wav_bytes(mono, fmt))
    return path


class Chunks:
    """An ``OpenChunk`` that keeps every chunk in memory, and notes the order they opened in."""

    def __init__(self) -> None:
        self.data: dict[int, bytes] = {}
        self.opened: list[int] = []

    @contextlib.contextmanager
    def __call__(self, index: int) -> Iterator[BinaryIO]:
        self.opened.append(index)
        buf = io.BytesIO()
        yield buf
        self.data[index] = buf.getvalue()
