"""PURE: a forward-only WAV/PCM writer, for outputs streamed into an object store.

:class:`mimoq.core.audio.AudioSink` seeks back to patch sizes; a multipart upload cannot.
So the sizes must be right in the header as it goes out:

- wav → pcm: the samples only (up to the declared data size); a trailing partial frame is
  held back and dropped, never sent.
- wav → wav with a declared data size (what MiMo sends: a complete file): the header goes
  out as received, its RIFF size made consistent with the declared data size, then the
  rest. If fewer sample bytes arrive than declared, :meth:`finish` raises
  :class:`TruncatedAudioError` (the caller aborts the upload; the call is retried).
- wav → wav with a placeholder size (0 or 0xFFFFFFFF, as streaming encoders write):
  :attr:`needs_rewrite` is True. The caller streams to a staging object, then copies it to
  the real key behind :meth:`final_header` (the same header with true sizes), dropping a
  trailing partial frame: a second pass over the bytes, never a buffer of the audio.

Memory: the header (at most ``MAX_WAV_HEADER_BYTES``) plus what is pending between drains.
"""

from __future__ import annotations

import struct

from mimoq.core.audio import (
    AudioContainer,
    AudioFormatError,
    AudioInfo,
    WavFormat,
    parse_wav_header,
)

_U32_MAX = 0xFFFFFFFF


class TruncatedAudioError(AudioFormatError):
    """The audio ended before the size its WAV header declares."""


class ForwardAudioSink:
    """Takes decoded WAV bytes (as an extractor's sink); hands out what to upload next."""

    def __init__(self, *, output: AudioContainer) -> None:
        self._output = output
        self._head = bytearray()
        self._header = b""  # the header as it goes out (wav output)
        self._format: WavFormat | None = None
        self._declared: int | None = None
        self._received = 0  # sample bytes taken (wav output: every byte after the header)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._written = 0  # bytes handed out by take()
        self._tail = b""  # pcm output: an incomplete frame, held back

    @property
    def format_known(self) -> bool:
        """Whether the header has been parsed (and :attr:`needs_rewrite` is meaningful)."""
        return self._format is not None

    @property
    def needs_rewrite(self) -> bool:
        """A WAV output whose header declares no size: stage it, then rewrite the header."""
        return self._output == "wav" and self._format is not None and self._declared is None

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    @property
    def data_offset(self) -> int:
        """Where the samples start in the output (0 for pcm)."""
        return len(self._header)

    def write(self, data: bytes) -> None:
        """Take the next piece of decoded audio."""
        if not data:
            return
        if self._format is None:
            self._head += data
            parsed = parse_wav_header(self._head)
            if parsed is None:
                return
            self._format, offset, self._declared = parsed
            head, self._head = bytes(self._head), bytearray()
            if self._output == "wav":
                header = bytearray(head[:offset])
                if self._declared is not None:  # RIFF size as the finished file will have it
                    struct.pack_into("<I", header, 4, min(_U32_MAX, offset + self._declared - 8))
                self._header = bytes(header)
                self._put(self._header)
            data = head[offset:]
        fmt = self._format
        if self._output == "wav":
            self._received += len(data)
            self._put(data)
            return
        if self._declared is not None:
            data = data[: self._declared - self._received]  # what follows is not audio
        self._received += len(data)
        buf = self._tail + data if self._tail else data
        whole = len(buf) - len(buf) % fmt.block_align
        self._tail = buf[whole:]
        self._put(buf[:whole])

    def take(self) -> bytes:
        """Everything written since the last call, to upload now."""
        out = b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        self._written += len(out)
        return out

    def finish(self) -> AudioInfo:
        """Check the audio is whole; describe it (``bytes`` as the final object will be)."""
        if self._format is None:
            if not self._head:
                raise AudioFormatError("no audio: the stream was empty")
            raise AudioFormatError(f"truncated WAV: {len(self._head)} bytes and no data chunk yet")
        fmt = self._format
        declared = self._declared
        if self._output == "pcm":
            data_bytes = self._received - len(self._tail)
            if not data_bytes:
                raise AudioFormatError("no audio: zero sample bytes")
            return AudioInfo(data_bytes, data_bytes, fmt.duration_s(data_bytes), fmt)
        if declared is None:
            data_bytes = self._received - self._received % fmt.block_align
            if not data_bytes:
                raise AudioFormatError("no audio: zero sample bytes")
            size = len(self._header) + data_bytes
            return AudioInfo(size, data_bytes, fmt.duration_s(data_bytes), fmt)
        if self._received < declared:
            raise TruncatedAudioError(
                f"the WAV declares {declared} bytes of samples but only {self._received} arrived"
            )
        data_bytes = declared - declared % fmt.block_align
        if not data_bytes:
            raise AudioFormatError("no audio: zero sample bytes")
        size = len(self._header) + self._received
        return AudioInfo(size, data_bytes, fmt.duration_s(data_bytes), fmt)

    def final_header(self, info: AudioInfo) -> bytes:
        """For a rewrite: the staged header with the true RIFF and data sizes."""
        header = bytearray(self._header)
        if info.data_bytes + len(header) - 8 > _U32_MAX:
            raise AudioFormatError("audio does not fit a WAV header (4 GiB max)")
        struct.pack_into("<I", header, 4, len(header) + info.data_bytes - 8)
        struct.pack_into("<I", header, len(header) - 4, info.data_bytes)
        return bytes(header)

    def _put(self, data: bytes) -> None:
        if data:
            self._pending.append(data)
            self._pending_bytes += len(data)
