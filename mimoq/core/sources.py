"""Audio inputs (transcription files, voice-clone samples): resolve, sniff, size-check.

The filesystem half of job validation. Both edges call it: the producer so that a bad
file is refused before it is enqueued, the worker because a foreign producer may send
anything (and the file may have changed since).
"""

from __future__ import annotations

import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import pybase64

from mimoq.core import dialect_constants as dc
from mimoq.core.audio import AudioFormatError, parse_wav_header
from mimoq.core.dialect import StreamedAudio
from mimoq.core.errors import InvalidRequestError
from mimoq.core.inputs import local_path, open_local, ref_kind
from mimoq.core.splitting.limits import MAX_LONG_AUDIO_BYTES, b64_chars

_SNIFF_BYTES = 64 * 1024
# MPEG-1 Layer III bitrates (kbit/s) by the 4-bit index of a frame header.
_MP3_KBPS = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 0)


@dataclass(frozen=True)
class AudioInput:
    """A checked audio input: what to send and what it costs."""

    mime: str
    size: int  # decoded bytes
    duration_s: float | None
    path: Path | None = None
    data_uri: str | None = None

    def for_request(self) -> str | StreamedAudio:
        if self.path is not None:
            return StreamedAudio(self.path, self.mime, self.size)
        assert self.data_uri is not None
        return self.data_uri


def to_path(ref: str) -> Path:
    """A local path from a path or ``file://`` URI (no I/O)."""
    if ref.lower().startswith("file://"):
        parsed = urlparse(ref)
        if parsed.netloc not in ("", "localhost"):
            raise InvalidRequestError(f"file URI host {parsed.netloc!r} is not local", param="file")
        return Path(unquote(parsed.path))
    return Path(ref).expanduser()


def normalize_reference(ref: str) -> str:
    """Make a path absolute so a worker with another working directory finds the same file."""
    if ref_kind(ref) != "local":
        return ref
    return str(to_path(ref).resolve())


def _sniff(head: bytes, size: int, mime: str, where: str, param: str) -> float | None:
    """Check the content matches the type; return the duration in seconds if it is cheap to know."""
    if mime == "audio/wav":
        if not (b"RIFF".startswith(head[:4]) and b"WAVE".startswith(head[8:12])):
            # Never quote the bytes: the file may be anything (a symlink to /etc/passwd).
            raise InvalidRequestError(
                f"{param}: {where} is not a usable WAV file (no RIFF/WAVE header)", param=param
            )
        try:
            parsed = parse_wav_header(head)
        except AudioFormatError as exc:
            raise InvalidRequestError(
                f"{param}: {where} is not a usable WAV file ({exc})", param=param
            ) from None
        if parsed is None:
            raise InvalidRequestError(f"{param}: {where} has a truncated WAV header", param=param)
        fmt, offset, data_size = parsed
        # A placeholder data size (streamed WAV): the samples run to the end of the file.
        return fmt.duration_s(data_size if data_size is not None else max(0, size - offset))
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return None
    raise InvalidRequestError(f"{param}: {where} is not an MP3 file", param=param)


def _mp3_duration(head: bytes, size: int) -> float | None:
    """Rough duration of a constant-bitrate MP3 from its first frame header."""
    start = 0
    if head.startswith(b"ID3") and len(head) >= 10:
        start = 10 + ((head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9])
    if start + 4 > len(head) or head[start] != 0xFF or head[start + 1] & 0xE0 != 0xE0:
        return None
    kbps = _MP3_KBPS[head[start + 2] >> 4]
    return (size - start) * 8 / (kbps * 1000) if kbps else None


def inspect_audio(ref: str, *, param: str, roots: Sequence[Path]) -> AudioInput:
    """Resolve and check an audio reference; every problem is an ``InvalidRequestError``.

    A local file is read only inside ``roots`` and only if it is a regular file (see
    ``mimoq.core.inputs``); this blocks, so callers on an event loop run it in a thread.
    """
    if ref.startswith("data:"):
        return _inspect_data_uri(ref, param)
    shown = local_path(ref, param)
    mime = dc.EXTENSION_MIME.get(shown.suffix.lower())
    if mime is None:
        raise InvalidRequestError(f"{param}: use a .wav or .mp3 file", param=param)
    with open_local(ref, roots, param) as local:
        size = local.size
        path = local.path
        try:
            head = local.file.read(_SNIFF_BYTES)
        except OSError as exc:
            raise InvalidRequestError(
                f"{param}: cannot read {shown} ({exc.strerror})", param=param
            ) from None
    return check_audio(head, size, mime=mime, where=str(shown), param=param, path=path)


def check_audio(
    head: bytes, size: int, *, mime: str, where: str, param: str, path: Path | None
) -> AudioInput:
    """Size and content checks of an audio file, from its first bytes and its size."""
    if size == 0:
        raise InvalidRequestError(f"{param}: {where} is empty", param=param)
    uri_chars = b64_chars(mime, size)
    if param == "voice" and uri_chars > dc.MAX_AUDIO_B64_CHARS:
        raise InvalidRequestError(
            f"voice: {where} is {size:,} bytes ({uri_chars:,} characters of base64); a voice "
            f"sample must fit one MiMo call ({dc.MAX_AUDIO_B64_CHARS:,}): trim it (a few seconds "
            "of clear speech suffice)",
            param=param,
        )
    if size > MAX_LONG_AUDIO_BYTES:
        # Longer recordings are split into chunks MiMo takes (worker/fanout.py), up to this.
        raise InvalidRequestError(
            f"{param}: {where} is {size:,} bytes; mimoq splits recordings of up to "
            f"{MAX_LONG_AUDIO_BYTES:,} bytes (about 18 hours of 16 kHz mono wav): cut it into "
            "files below that",
            param=param,
        )
    duration = _sniff(head, size, mime, where, param)
    if mime == "audio/mpeg":
        duration = _mp3_duration(head, size)
    return AudioInput(mime=mime, size=size, duration_s=duration, path=path)


def _inspect_data_uri(uri: str, param: str) -> AudioInput:
    header, _, payload = uri.partition(",")
    mime = dc.MIME_ALIASES.get(header[5:].split(";")[0].lower())
    if mime is None or not header.lower().endswith(";base64"):
        raise InvalidRequestError(
            f"{param}: use a data:audio/wav;base64,... or audio/mpeg URI", param=param
        )
    try:
        # Decoding validates every character; at most 10 MB, so briefly holding it is fine.
        decoded = pybase64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError(
            f"{param}: the data URI is not valid base64", param=param
        ) from None
    if not decoded:
        raise InvalidRequestError(f"{param}: the data URI carries no audio", param=param)
    head = decoded[:_SNIFF_BYTES]
    duration = _sniff(head, len(decoded), mime, "the data URI", param)
    if mime == "audio/mpeg":
        duration = _mp3_duration(head, len(decoded))
    # Re-spell the header canonically: MiMo documents audio/wav and audio/mpeg only.
    return AudioInput(
        mime=mime, size=len(decoded), duration_s=duration, data_uri=f"data:{mime};base64,{payload}"
    )
