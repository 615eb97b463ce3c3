"""Down-mixing to mono and resampling, streamed block by block (soxr keeps the filter state)."""

from __future__ import annotations

from typing import Final

import numpy as np
import soxr  # type: ignore[import-untyped]

from mimoq.core.audio import WAVE_FORMAT_PCM, WavFormat
from mimoq.core.splitting.pcm import Floats, Frames, to_float, to_s16

#: What long recordings are converted to before splitting, when that makes them smaller:
#: 16 kHz is the rate speech recognisers work at (the band above 8 kHz carries little of
#: speech), mono because MiMo hears one voice track, 16-bit because it is WAV's plainest form.
SPLIT_RATE: Final = 16_000
SPLIT_FORMAT: Final = WavFormat(SPLIT_RATE, 1, 16)


def split_format(src: WavFormat) -> WavFormat:
    """The format ``src`` is split in: itself when already compact, else 16 kHz mono s16.

    A recording is converted only when that shrinks it (fewer bytes per second, so fewer
    MiMo calls) or when its encoding is not plain 8/16-bit PCM; the rate is never raised.
    """
    plain = src.audio_format == WAVE_FORMAT_PCM and src.bits_per_sample in (8, 16)
    if plain and src.byte_rate <= SPLIT_FORMAT.byte_rate:
        return src
    return WavFormat(min(src.sample_rate, SPLIT_RATE), 1, 16)


class Converter:
    """Turns blocks of ``src`` frames into blocks of ``dst`` (mono or same-channel s16) frames.

    Channels are averaged to mono (or a mono source repeated to ``dst.channels``); the rate
    is changed by soxr's streaming resampler at high quality, whose filter carries over from
    block to block so no seam is audible; samples are rounded and clipped to 16 bits.
    """

    def __init__(self, src: WavFormat, dst: WavFormat) -> None:
        if dst.bits_per_sample != 16 or dst.audio_format != WAVE_FORMAT_PCM:
            raise ValueError("conversion targets 16-bit PCM")
        if dst.channels not in (1, src.channels) and src.channels != 1:
            raise ValueError(f"cannot map {src.channels} channels to {dst.channels}")
        self.src = src
        self.dst = dst
        self._stream = (
            None
            if src.sample_rate == dst.sample_rate
            else soxr.ResampleStream(
                src.sample_rate, dst.sample_rate, dst.channels, dtype="float32", quality="HQ"
            )
        )

    def _channels(self, samples: Floats) -> Floats:
        if samples.shape[1] == self.dst.channels:
            return samples
        if self.dst.channels == 1:
            mono: Floats = samples.mean(axis=1, keepdims=True, dtype=np.float32)
            return mono
        return np.repeat(samples, self.dst.channels, axis=1)

    def convert(self, frames: Frames, *, last: bool = False) -> Frames:
        """The converted frames for this block (may be fewer or none while the filter fills)."""
        samples = np.ascontiguousarray(self._channels(to_float(frames, self.src)))
        if self._stream is not None:
            samples = self._stream.resample_chunk(samples, last=last).reshape(-1, self.dst.channels)
        return to_s16(samples)

    def flush(self) -> Frames:
        """The frames still inside the resampler at the end of the stream."""
        return self.convert(np.zeros((0, self.src.channels), dtype=np.float32), last=True)
