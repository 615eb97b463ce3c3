"""Audio inputs (transcription files, voice-clone samples): resolve, sniff, size-check.

The filesystem half of job validation. Both edges call it: the producer so that a bad
file is refused before it is enqueued, the worker because a foreign producer may send
anything (and the file may have changed since).
"""

from __future__ import annotations

import binascii
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final
from urllib.parse import unquote, urlparse

import pybase64

from mimoq.core import dialect_constants as dc
from mimoq.core.audio import WAVE_FORMAT_PCM, AudioFormatError, parse_wav_header
from mimoq.core.dialect import StreamedAudio
from mimoq.core.errors import InvalidRequestError
from mimoq.core.inputs import local_path, open_local, ref_kind
from mimoq.core.splitting.chunks import clock
from mimoq.core.splitting.mp3 import mp3_duration_s, parse_frame_header
from mimoq.core.splitting.split_limits import MAX_LONG_AUDIO_BYTES, b64_chars

_SNIFF_BYTES = 64 * 1024
#: The leading bytes of containers people keep recordings in, to say what a file really is.
_MAGIC: Final = (
    (b"fLaC", "FLAC"),
    (b"OggS", "Ogg"),
    (b"FORM", "AIFF"),
    (b"caff", "CAF"),
    (b"\x1aE\xdf\xa3", "WebM/Matroska"),
    (b"#!AMR", "AMR"),
    (b".snd", "Sun AU"),
    (b"riff", "Wave64"),
    (b"0&\xb2u", "WMA/ASF"),
)
#: WAV sent to MiMo as it is: plain 8/16-bit integer PCM. Other encodings (G.711 mu-law
#: and A-law, IMA/MS ADPCM, 24/32-bit integer, float...) are decoded and sent as 16-bit.
_PLAIN_WAV_BITS: Final = (8, 16)
#: The fewest bytes a second of any audio mimoq takes needs: 4 kbit/s, below the lowest
#: MPEG (8 kbit/s) and telephone codecs. Durations are capped at what the size can hold.
MIN_BYTES_PER_S: Final = 500


def sniff(head: bytes) -> str:
    """What the bytes are, whatever the file is called: ``wav``, ``mp3``, a container's name
    (``FLAC``, ``Ogg``, ``MP4/M4A``...), or ``unknown``."""
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"ID3") or parse_frame_header(head[:4]) is not None:
        return "mp3"
    if head[4:8] == b"ftyp":
        return "MP4/M4A"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return "unknown"


@dataclass(frozen=True)
class AudioInput:
    """A checked audio input: what to send and what it costs."""

    mime: str
    size: int  # decoded bytes
    duration_s: float | None
    path: Path | None = None
    data_uri: str | None = None
    #: Audio MiMo is not sent as it is (telephone WAV, 24-bit, float, a FLAC named .wav...):
    #: it is decoded (libsndfile, or ffmpeg) and uploaded as 16 kHz mono 16-bit WAV.
    decode: bool = False

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


def _check(
    head: bytes, size: int, where: str, param: str, opener: Callable[[], BinaryIO]
) -> tuple[str, float | None, bool]:
    """(MIME type to send, duration if cheap to know, needs decoding) of audio by its content.

    ``opener`` opens the whole audio as a file, for the MP3 walker and for libsndfile, which
    is asked only about what mimoq does not read itself. The duration is never more than
    ``size`` bytes can hold at ``MIN_BYTES_PER_S``: a header claiming more (a forged Xing
    frame count, a 1 Hz WAV) would have the limiter pre-charge hours of tokens for it.
    """
    mime, duration, decode = _content(head, size, where, param, opener)
    if duration is not None:
        duration = min(duration, size / MIN_BYTES_PER_S)
    return mime, duration, decode


def _content(
    head: bytes, size: int, where: str, param: str, opener: Callable[[], BinaryIO]
) -> tuple[str, float | None, bool]:
    kind = sniff(head)
    if kind == "mp3":
        duration = mp3_duration_s(opener(), size)
        if duration is None:
            raise InvalidRequestError(
                f"{param}: {where} starts like an MP3 file but holds no MPEG audio frames "
                "(an empty or damaged file): export it again",
                param=param,
            )
        return "audio/mpeg", duration, False
    if kind == "wav":
        try:
            parsed = parse_wav_header(head)
        except AudioFormatError as exc:
            duration = _decodable(opener)
            if duration is None:
                raise InvalidRequestError(
                    f"{param}: {where} is not a usable WAV file ({exc}) and libsndfile cannot "
                    "decode it either: convert it to 16-bit PCM WAV or MP3",
                    param=param,
                ) from None
            return "audio/wav", duration, True
        if parsed is None:
            raise InvalidRequestError(f"{param}: {where} has a truncated WAV header", param=param)
        fmt, offset, data_size = parsed
        present = max(0, size - offset)
        if data_size is not None and data_size > present + fmt.block_align:
            raise InvalidRequestError(
                f"{param}: {where} is cut short: its header announces {data_size:,} bytes of "
                f"audio ({clock(fmt.duration_s(data_size))}) but only {present:,} are there "
                f"({clock(fmt.duration_s(present))}); the recording was not finished or a copy "
                "was cut off: copy it again, or rewrite its header to keep what is there "
                "(e.g. sox cut.wav fixed.wav)",
                param=param,
            )
        # A placeholder data size (streamed WAV): the samples run to the end of the file.
        duration = fmt.duration_s(data_size if data_size is not None else present)
        plain = fmt.audio_format == WAVE_FORMAT_PCM and fmt.bits_per_sample in _PLAIN_WAV_BITS
        return "audio/wav", duration, not plain
    duration = _decodable(opener)
    if duration is not None:
        return "audio/wav", duration, True
    what = "neither WAV nor MP3" if kind == "unknown" else f"{kind} audio, not WAV or MP3,"
    raise InvalidRequestError(
        f"{param}: {where} is {what} and libsndfile cannot decode it: convert it to wav or "
        "mp3 (e.g. ffmpeg -i in out.wav), or name it by its format (.m4a...) and let "
        "mimoq batch convert it with ffmpeg",
        param=param,
    )


def _decodable(opener: Callable[[], BinaryIO]) -> float | None:
    """The duration of audio libsndfile can decode, or None when it cannot."""
    try:
        import soundfile  # type: ignore[import-untyped]  # libsndfile: many encodings

        with soundfile.SoundFile(opener()) as sound:
            return float(sound.frames / sound.samplerate) if sound.samplerate else None
    except (ImportError, RuntimeError, OSError, ValueError):
        return None


def probe_duration_s(path: Path) -> float | None:
    """The duration of the recording at ``path`` by its content, or None when it is not
    audio mimoq reads (never raises): for estimates, such as a batch's quota-aware ETA."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size

            def opener() -> BinaryIO:
                f.seek(0)
                return f

            return _check(f.read(_SNIFF_BYTES), size, str(path), "file", opener)[1]
    except (OSError, InvalidRequestError):
        return None


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

        def opener() -> BinaryIO:
            # The very file open_local checked (no second lookup of the name), rewound.
            local.file.seek(0)
            return local.file

        return check_audio(
            head, size, mime=mime, where=str(shown), param=param, path=path, opener=opener
        )


def check_audio(
    head: bytes,
    size: int,
    *,
    mime: str,
    where: str,
    param: str,
    path: Path | None,
    opener: Callable[[], BinaryIO],
) -> AudioInput:
    """Size and content checks of an audio file, from its first bytes and its size; the
    content decides the type (``mime`` is what the name says), ``opener`` gives the whole
    file to the MP3 walker and libsndfile."""
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
    mime, duration, decode = _check(head, size, where, param, opener)
    if decode and param == "voice":
        raise InvalidRequestError(
            f"voice: {where} is not 16-bit PCM WAV or MP3; convert the sample to one of those",
            param=param,
        )
    return AudioInput(mime=mime, size=size, duration_s=duration, path=path, decode=decode)


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
    # The content decides, not the declared type: an MP3 labelled audio/wav is sent as MP3.
    mime, duration, decode = _check(
        head, len(decoded), "the data URI", param, lambda: io.BytesIO(decoded)
    )
    if decode and param == "voice":
        raise InvalidRequestError(
            "voice: the sample is not 16-bit PCM WAV or MP3; convert it to one of those",
            param=param,
        )
    # Re-spell the header canonically: MiMo documents audio/wav and audio/mpeg only.
    return AudioInput(
        mime=mime, size=len(decoded), duration_s=duration, decode=decode,
        data_uri=f"data:{mime};base64,{payload}",
    )  # fmt: skip
