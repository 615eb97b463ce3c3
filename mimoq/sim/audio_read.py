"""What the simulator "hears" in uploaded audio: WAV chunks, an MP3 guess, a transcript."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from mimoq.core.audio import AudioFormatError, WavFormat, parse_wav_header

#: MP3 durations are estimated from the size at this bitrate (no frame parsing: the
#: simulator only needs a stable, plausible number).
MP3_ASSUMED_BITRATE = 128_000


@dataclass(frozen=True)
class WavInfo:
    """The parts of a WAV file the simulator cares about."""

    fmt: WavFormat
    data_bytes: int
    #: The text of a LIST/INFO/ICMT chunk (the simulator's own WAVs carry what they say).
    comment: str | None

    @property
    def duration_s(self) -> float:
        return self.fmt.duration_s(self.data_bytes)


@dataclass(frozen=True)
class Heard:
    """The simulated recognition of one upload."""

    transcript: str
    duration_s: float


def _info_comment(body: bytes) -> str | None:
    # ``body`` is a LIST chunk's payload after its "INFO" type: sub-chunks id, size, bytes.
    pos = 0
    while pos + 8 <= len(body):
        sub_id = body[pos : pos + 4]
        (size,) = struct.unpack_from("<I", body, pos + 4)
        if sub_id == b"ICMT":
            raw = body[pos + 8 : pos + 8 + size].rstrip(b"\x00")
            return raw.decode("utf-8", "replace")
        pos += 8 + size + (size & 1)
    return None


def _comment(header: bytes) -> str | None:
    # ``header`` is everything before the data chunk: look for LIST/INFO among its chunks.
    pos = 12
    while pos + 8 <= len(header):
        chunk_id, size = struct.unpack_from("<4sI", header, pos)
        if chunk_id == b"LIST" and header[pos + 8 : pos + 12] == b"INFO":
            return _info_comment(header[pos + 12 : pos + 8 + size])
        pos += 8 + size + (size & 1)
    return None


def parse_wav(data: bytes) -> WavInfo:
    """Read a whole RIFF/WAVE file; raises ``AudioFormatError`` if it is not one.

    The header is parsed by ``mimoq.core.audio.parse_wav_header`` (the worker's own reader); a
    data size that is a placeholder or larger than the file is replaced by the bytes present.
    """
    parsed = parse_wav_header(data)
    if parsed is None:
        raise AudioFormatError("truncated WAV header")
    fmt, offset, declared = parsed
    present = len(data) - offset
    data_bytes = present if declared is None else min(declared, present)
    return WavInfo(fmt=fmt, data_bytes=data_bytes, comment=_comment(data[: offset - 8]))


def looks_like_mp3(data: bytes) -> bool:
    """An ID3 tag or an MPEG audio frame sync at the start."""
    return data[:3] == b"ID3" or (len(data) >= 2 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0)


def assumed_mp3_duration_s(size: int) -> float:
    """Duration of ``size`` bytes of MP3, assuming ``MP3_ASSUMED_BITRATE``."""
    return size * 8 / MP3_ASSUMED_BITRATE


def hear(mime: str, data: bytes) -> Heard:
    """Transcribe ``data`` (already checked to be ``mime``).

    A WAV that carries an ICMT comment (every WAV the simulator speaks) is heard as that
    text. Anything else is heard as ``[audio 12.34s sha1:abcd1234]``: what was sent, in a
    form a test can predict.
    """
    if mime == "audio/wav":
        info = parse_wav(data)
        duration = info.duration_s
        if info.comment is not None:
            return Heard(transcript=info.comment, duration_s=duration)
    else:
        duration = assumed_mp3_duration_s(len(data))
    digest = hashlib.sha1(data, usedforsecurity=False).hexdigest()[:8]
    return Heard(transcript=f"[audio {duration:.2f}s sha1:{digest}]", duration_s=duration)
