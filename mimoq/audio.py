"""PURE: WAV/PCM formats and headers."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from mimoq import dialect_constants as dc


class AudioFormatError(ValueError):
    """Bytes that are not the audio they claim to be."""


@dataclass(frozen=True)
class WavFormat:
    sample_rate: int
    channels: int
    bits_per_sample: int
    audio_format: int = 1  # 1 = integer PCM

    @property
    def block_align(self) -> int:
        return self.channels * self.bits_per_sample // 8

    @property
    def byte_rate(self) -> int:
        return self.sample_rate * self.block_align

    def duration_s(self, data_bytes: int) -> float:
        return data_bytes / self.byte_rate if self.byte_rate else 0.0


#: What MiMo's ``pcm16`` is: 24 kHz, 16-bit signed little-endian, mono.
MIMO_PCM = WavFormat(dc.PCM_SAMPLE_RATE, dc.PCM_CHANNELS, dc.PCM_BITS)


def wav_header(fmt: WavFormat, data_bytes: int) -> bytes:
    """A canonical 44-byte RIFF/WAVE header for ``data_bytes`` of sample data."""
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        fmt.audio_format,
        fmt.channels,
        fmt.sample_rate,
        fmt.byte_rate,
        fmt.block_align,
        fmt.bits_per_sample,
        b"data",
        data_bytes,
    )
