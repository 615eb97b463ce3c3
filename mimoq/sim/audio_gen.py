"""Synthetic TTS audio: a WAV (or raw pcm16) of a planned length, emitted as base64 chunks."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import pybase64

from mimoq.core.audio import MIMO_PCM, WavFormat, wav_header

_TONE_HZ = 440
_AMPLITUDE = 6_000  # about -15 dBFS: audible, never clipping
#: Cap on the text carried in a WAV: readers bound the header they buffer (the worker's
#: ``MAX_WAV_HEADER_BYTES`` is 1 MiB), and TTS texts are split far below this anyway.
MAX_COMMENT_BYTES = 64 * 1024
#: RIFF sizes are 32-bit; the data chunk must leave room for the header within 4 GiB.
_MAX_DATA_BYTES = 0xFFFF_FFFF - (1 << 20)


@dataclass(frozen=True)
class SpeechAudio:
    """One TTS answer's audio: ``header`` (empty for pcm16) then ``data_bytes`` of samples."""

    header: bytes
    data_bytes: int
    fmt: WavFormat

    @property
    def total_bytes(self) -> int:
        return len(self.header) + self.data_bytes

    @property
    def duration_s(self) -> float:
        return self.fmt.duration_s(self.data_bytes)

    @property
    def b64_chars(self) -> int:
        """Length of the base64 text of the whole file (with padding)."""
        return 4 * math.ceil(self.total_bytes / 3)


def speech_duration_s(text: str, seconds_per_char: float, min_s: float) -> float:
    """How long the simulated speech of ``text`` lasts."""
    return max(min_s, seconds_per_char * len(text))


def info_chunk(text: str) -> bytes:
    """A ``LIST``/``INFO`` chunk whose ``ICMT`` sub-chunk carries ``text`` (UTF-8, NUL-ended).

    Texts past ``MAX_COMMENT_BYTES`` are cut (at a character boundary).
    """
    encoded = text.encode("utf-8")
    if len(encoded) > MAX_COMMENT_BYTES:
        encoded = encoded[:MAX_COMMENT_BYTES].decode("utf-8", "ignore").encode("utf-8")
    comment = encoded + b"\x00"
    if len(comment) % 2:
        comment += b"\x00"  # RIFF chunks are word-aligned
    body = b"INFO" + b"ICMT" + struct.pack("<I", len(comment)) + comment
    return b"LIST" + struct.pack("<I", len(body)) + body


def wav_header_with_text(fmt: WavFormat, data_bytes: int, text: str | None) -> bytes:
    """The bytes before the samples: RIFF, ``fmt ``, optional LIST/INFO, ``data`` header."""
    canonical = wav_header(fmt, data_bytes)
    if text is None:
        return canonical
    info = info_chunk(text)
    # Re-size RIFF for the extra chunk, and put it before ``data`` (offset 36 of the canonical
    # header) so that readers which assume a 44-byte header are caught out, as real files do.
    riff = b"RIFF" + struct.pack("<I", 36 + len(info) + data_bytes)
    return riff + canonical[8:36] + info + canonical[36:]


def plan_speech(
    text: str,
    *,
    wav: bool,
    sample_rate: int,
    seconds_per_char: float,
    min_s: float,
    data_bytes: int | None = None,
    embed_text: bool = True,
) -> SpeechAudio:
    """Plan the audio for ``text``: its format, header and sample-byte count.

    ``data_bytes`` forces the size of the samples (rounded down to whole samples) instead of
    deriving it from the text's length.
    """
    fmt = WavFormat(sample_rate, 1, 16) if wav else MIMO_PCM
    if data_bytes is None:
        samples = round(speech_duration_s(text, seconds_per_char, min_s) * fmt.sample_rate)
        data_bytes = samples * fmt.block_align
    data_bytes = min(data_bytes - data_bytes % fmt.block_align, _MAX_DATA_BYTES)
    header = wav_header_with_text(fmt, data_bytes, text if embed_text else None) if wav else b""
    return SpeechAudio(header=header, data_bytes=data_bytes, fmt=fmt)


@lru_cache(maxsize=8)
def tone_period(sample_rate: int) -> bytes:
    """One period of a ~440 Hz sine as s16le samples (a whole number of samples)."""
    n = max(2, round(sample_rate / _TONE_HZ))
    samples = (round(_AMPLITUDE * math.sin(2 * math.pi * i / n)) for i in range(n))
    return struct.pack(f"<{n}h", *samples)


def _cyclic(period: bytes, start: int, length: int) -> bytes:
    """``length`` bytes of ``period`` repeated forever, from offset ``start``."""
    offset = start % len(period)
    reps = (offset + length) // len(period) + 1
    return (period * reps)[offset : offset + length]


def iter_base64(audio: SpeechAudio, chunk_bytes: int = 64 * 1024) -> Iterator[bytes]:
    """The base64 text of ``audio`` in chunks of about ``chunk_bytes`` of audio each.

    Memory stays at a few chunks whatever the size: the samples repeat with the tone's
    period, so every full chunk of samples (its length a multiple of both 3 and the period)
    encodes to the same base64 text, computed once and yielded again and again.
    """
    period = tone_period(audio.fmt.sample_rate)
    step = math.lcm(3, len(period))
    size = max(1, chunk_bytes // step) * step
    header = audio.header
    aligned = len(header) - len(header) % 3
    for i in range(0, aligned, size):
        yield pybase64.b64encode(header[i : min(i + size, aligned)])
    # Glue the header's last 0-2 bytes to the first samples so what follows is 3-aligned.
    lead = min((3 - (len(header) - aligned)) % 3, audio.data_bytes)
    if aligned < len(header) or lead:
        yield pybase64.b64encode(header[aligned:] + _cyclic(period, 0, lead))
    remaining = audio.data_bytes - lead
    full, tail = divmod(remaining, size)
    if full:
        chunk = pybase64.b64encode(_cyclic(period, lead, size))
        for _ in range(full):
            yield chunk
    if tail:
        yield pybase64.b64encode(_cyclic(period, lead + full * size, tail))
