"""PURE: WAV/PCM formats, RIFF header parsing, and an incremental WAV/PCM file writer."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO, Final, Literal

from mimoq.core import dialect_constants as dc


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


# --- reading WAV headers ----------------------------------------------------------------------

#: A header (everything before the first sample) larger than this is refused, so that the
#: sink's buffering stays bounded whatever a provider sends.
MAX_WAV_HEADER_BYTES: Final = 1 << 20

WAVE_FORMAT_PCM: Final = 1
WAVE_FORMAT_IEEE_FLOAT: Final = 3
WAVE_FORMAT_EXTENSIBLE: Final = 0xFFFE
# The tail every KSDATAFORMAT_SUBTYPE_* GUID shares; its first two bytes are the format tag.
_SUBFORMAT_TAIL: Final = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
_PCM_BITS: Final = (8, 16, 24, 32)
_PLACEHOLDER_SIZES: Final = (0, 0xFFFFFFFF)  # what streaming encoders write before they know
_U32_MAX: Final = 0xFFFFFFFF


def _parse_fmt(body: bytes) -> WavFormat:
    """The ``fmt `` chunk's body as a :class:`WavFormat` (extensible PCM reported as tag 1)."""
    if len(body) < 16:
        raise AudioFormatError(f"WAV fmt chunk is {len(body)} bytes, shorter than 16")
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", body)
    if tag == WAVE_FORMAT_EXTENSIBLE:
        if len(body) < 40 or body[26:40] != _SUBFORMAT_TAIL:
            raise AudioFormatError("WAVE_FORMAT_EXTENSIBLE header without a valid subformat GUID")
        (tag,) = struct.unpack_from("<H", body, 24)
    if tag == WAVE_FORMAT_PCM and bits not in _PCM_BITS:
        raise AudioFormatError(f"unsupported WAV: {bits}-bit PCM (8, 16, 24 or 32 only)")
    if tag == WAVE_FORMAT_IEEE_FLOAT and bits != 32:
        raise AudioFormatError(f"unsupported WAV: {bits}-bit float (32-bit only)")
    if tag not in (WAVE_FORMAT_PCM, WAVE_FORMAT_IEEE_FLOAT):
        raise AudioFormatError(f"unsupported WAV encoding: format tag {tag:#06x} (PCM/float only)")
    if not channels or not rate:
        raise AudioFormatError(f"invalid WAV: {channels} channel(s) at {rate} Hz")
    fmt = WavFormat(rate, channels, bits, tag)
    if block_align != fmt.block_align:
        raise AudioFormatError(
            f"invalid WAV: block_align {block_align} for {channels} x {bits}-bit samples"
        )
    return fmt


def parse_wav_header(buf: bytes | bytearray) -> tuple[WavFormat, int, int | None] | None:
    """Read a RIFF/WAVE header from the start of ``buf``.

    Returns ``(format, offset of the first sample byte, declared data size)``, the size being
    None when it is a placeholder (0 or 0xFFFFFFFF, as streaming encoders write), or None
    when ``buf`` is too short to decide yet. Chunks before ``data`` (``fmt``, ``LIST``,
    ``fact``, ``JUNK``...) may come in any order; odd-sized ones are padded to even.
    Raises :class:`AudioFormatError` naming the problem.
    """
    if not (b"RIFF".startswith(bytes(buf[:4])) and b"WAVE".startswith(bytes(buf[8:12]))):
        raise AudioFormatError(f"not a RIFF/WAVE file (starts with {bytes(buf[:12])!r})")
    fmt: WavFormat | None = None
    pos = 12
    while True:
        if pos + 8 > MAX_WAV_HEADER_BYTES:
            raise AudioFormatError(f"WAV header is larger than {MAX_WAV_HEADER_BYTES} bytes")
        if len(buf) < pos + 8:
            return None
        chunk_id, size = struct.unpack_from("<4sI", buf, pos)
        if chunk_id == b"data":
            if fmt is None:
                raise AudioFormatError("invalid WAV: data chunk before any fmt chunk")
            return fmt, pos + 8, None if size in _PLACEHOLDER_SIZES else size
        end = pos + 8 + size
        if chunk_id == b"fmt ":
            if end > MAX_WAV_HEADER_BYTES:
                raise AudioFormatError(f"WAV header is larger than {MAX_WAV_HEADER_BYTES} bytes")
            if len(buf) < end:
                return None
            fmt = _parse_fmt(bytes(buf[pos + 8 : end]))
        pos = end + (size & 1)


# --- writing decoded audio ------------------------------------------------------------------

#: What a stream of audio bytes is, or is to become: a RIFF/WAVE file or raw samples.
AudioContainer = Literal["wav", "pcm"]


@dataclass(frozen=True)
class AudioInfo:
    """What :class:`AudioSink` wrote."""

    bytes: int  #: size of the output file as written
    data_bytes: int  #: sample bytes in it (whole frames)
    duration_s: float
    format: WavFormat


class AudioSink:
    """Writes decoded audio incrementally into a seekable binary file.

    ``source`` is what arrives: ``"wav"`` (a complete RIFF file, as MiMo's ``wav`` answer;
    its format is read from the header, never assumed) or ``"pcm"`` (raw samples in
    ``pcm_format``, s16le 24 kHz mono by default). ``output`` is what the file becomes:

    - wav -> wav: the file as received; on :meth:`finish` the RIFF and data sizes are patched
      when they are placeholders or disagree with what arrived.
    - wav -> pcm: only the data chunk's samples, raw in the WAV's own encoding (s16le for
      16-bit, u8 for 8-bit, s24le, s32le, or f32le for float); chunks after data are ignored.
    - pcm -> wav: a 44-byte header, then the samples; sizes patched on finish.
    - pcm -> pcm: passed through.

    A trailing partial frame (a sample cut in half, or one channel of a frame) is dropped:
    truncated from the file and left out of the declared size. Only the bytes before the
    first sample are buffered (at most :data:`MAX_WAV_HEADER_BYTES`).
    """

    def __init__(
        self,
        f: BinaryIO,
        *,
        source: AudioContainer,
        output: AudioContainer,
        pcm_format: WavFormat = MIMO_PCM,
    ) -> None:
        self._f = f
        self._source = source
        self._output = output
        self._start = f.tell()  # patches and truncation are relative to where we began
        self._head = bytearray()  # wav source only: bytes until the header parses
        self._format: WavFormat | None = pcm_format if source == "pcm" else None
        self._data_offset = 0  # where the samples start in the output file
        self._declared: int | None = None  # the data size the source's header declares
        self._riff_size: int | None = None  # the RIFF size a wav source declares
        self._received = 0  # sample bytes taken (in wav -> wav: everything after the header)
        self._written = 0  # bytes written to ``f``

    def write(self, data: bytes) -> None:
        """Take the next piece of audio (usable directly as an extractor's sink)."""
        if not data:
            return
        if self._format is None:
            self._head += data
            parsed = parse_wav_header(self._head)
            if parsed is None:
                return
            self._format, offset, self._declared = parsed
            head, self._head = bytes(self._head), bytearray()
            (self._riff_size,) = struct.unpack_from("<I", head, 4)
            if self._output == "wav":
                self._data_offset = offset
                self._put(head[:offset])
            data = head[offset:]
        elif self._written == 0 and self._source == "pcm" and self._output == "wav":
            # pcm -> wav: a placeholder header now, sizes patched in finish()
            header = wav_header(self._format, 0)
            self._data_offset = len(header)
            self._put(header)
        if self._output == "pcm" and self._declared is not None:
            # Samples stop at the declared size: what follows is other chunks, not audio.
            data = data[: self._declared - self._received]
        self._received += len(data)
        self._put(data)

    def finish(self) -> AudioInfo:
        """Fix up sizes and return what was written; :class:`AudioFormatError` if no audio."""
        if self._format is None:
            if not self._head:
                raise AudioFormatError("no audio: the stream was empty")
            raise AudioFormatError(f"truncated WAV: {len(self._head)} bytes and no data chunk yet")
        fmt = self._format
        declared = self._declared
        complete = declared is not None and declared <= self._received
        available = declared if complete and declared is not None else self._received
        data_bytes = available - available % fmt.block_align
        if not data_bytes:
            raise AudioFormatError("no audio: zero sample bytes")
        if self._output == "pcm" or not complete:
            # Nothing of value follows the samples here: cut the partial frame so the file
            # is exactly header + whole frames.
            self._truncate(self._data_offset + data_bytes)
        if self._output == "wav":
            # A complete wav source is kept as received, even a size off the frame grid.
            if not complete:
                self._patch_u32(self._data_offset - 4, data_bytes)
            if self._riff_size != self._written - 8:
                self._patch_u32(4, self._written - 8)
        return AudioInfo(self._written, data_bytes, fmt.duration_s(data_bytes), fmt)

    def _put(self, data: bytes) -> None:
        if data:
            self._f.write(data)
            self._written += len(data)

    def _truncate(self, size: int) -> None:
        if size < self._written:
            self._f.truncate(self._start + size)
            self._f.seek(self._start + size)
            self._written = size

    def _patch_u32(self, offset: int, value: int) -> None:
        if value > _U32_MAX:
            raise AudioFormatError(f"audio of {value} bytes does not fit a WAV header (4 GiB max)")
        end = self._f.tell()
        self._f.seek(self._start + offset)
        self._f.write(struct.pack("<I", value))
        self._f.seek(end)
