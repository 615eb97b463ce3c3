"""WAV recordings split into chunk files under a size limit, streamed, cut at quiet points."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import BinaryIO, Final

from mimoq.core.audio import (
    MAX_WAV_HEADER_BYTES,
    AudioFormatError,
    AudioSink,
    WavFormat,
    parse_wav_header,
)
from mimoq.core.splitting.chunker import Chunker, ChunkFrames
from mimoq.core.splitting.chunks import AudioChunk, OpenChunk, UnsupportedAudioError
from mimoq.core.splitting.pcm import Frames, iter_pcm_blocks, to_bytes, to_float
from mimoq.core.splitting.resample import Converter, split_format

#: Cuts are searched for in the last 20 s of each chunk (or its last tenth, if shorter):
#: long enough to hold a pause in any speech, short enough to keep chunks near the limit.
SEARCH_S: Final = 20.0
#: Loudness is measured over 20 ms windows: about a syllable's shortest sound.
WINDOW_S: Final = 0.02
_BLOCK_S: Final = 1.0
_HEADER_BYTES: Final = 44  # what AudioSink writes before the samples


def read_wav_header(f: BinaryIO) -> tuple[WavFormat, int | None]:
    """Parse the header at the start of ``f``; leaves ``f`` at the first sample byte."""
    head = b""
    while True:
        more = f.read(64 * 1024)
        head += more
        try:
            parsed = parse_wav_header(head)
        except AudioFormatError as exc:
            raise UnsupportedAudioError(f"not a usable WAV file ({exc})") from None
        if parsed is not None:
            fmt, offset, data_bytes = parsed
            f.seek(offset)
            return fmt, data_bytes
        if not more or len(head) > MAX_WAV_HEADER_BYTES:
            raise UnsupportedAudioError("truncated WAV file: no data chunk")


def _frames(
    f: BinaryIO, src: WavFormat, dst: WavFormat, data_bytes: int | None
) -> Iterator[Frames]:
    blocks = iter_pcm_blocks(f, src, data_bytes, int(src.sample_rate * _BLOCK_S))
    if dst == src:
        yield from blocks
        return
    converter = Converter(src, dst)
    for block in blocks:
        yield converter.convert(block)
    yield converter.flush()


class _ChunkWriter:
    """Writes pieces to chunk files, one open at a time, recording each chunk's span."""

    def __init__(self, open_chunk: OpenChunk, fmt: WavFormat) -> None:
        self._open_chunk = open_chunk
        self._fmt = fmt
        self._stack = contextlib.ExitStack()
        self._sink: AudioSink | None = None
        self._frames_done = 0
        self._chunk_frames = 0
        self.chunks: list[AudioChunk] = []

    def write(self, piece: ChunkFrames) -> None:
        if self._sink is None:
            f = self._stack.enter_context(self._open_chunk(piece.index))
            self._sink = AudioSink(f, source="pcm", output="wav", pcm_format=self._fmt)
        self._sink.write(to_bytes(piece.frames, self._fmt))
        self._chunk_frames += len(piece.frames)
        if piece.last:
            info = self._sink.finish()
            self._stack.close()  # renames the chunk file into place
            rate = self._fmt.sample_rate
            start = self._frames_done / rate
            self._frames_done += self._chunk_frames
            self.chunks.append(AudioChunk(piece.index, start, self._frames_done / rate, info.bytes))
            self._sink = None
            self._chunk_frames = 0

    def abort(self) -> None:
        self._stack.close()


def split_wav(
    f: BinaryIO, open_chunk: OpenChunk, *, max_bytes: int, search_s: float = SEARCH_S
) -> list[AudioChunk]:
    """Split the WAV in ``f`` into chunk files of at most ``max_bytes`` each (header included).

    The recording is read once, one second at a time, converted on the way when
    :func:`split_format` says it shrinks (16 kHz mono s16), and written chunk by chunk:
    memory holds about one search region, whatever the recording's length. Every chunk is
    a canonical 44-byte-header WAV; their spans tile the recording without gap or overlap.
    """
    src, data_bytes = read_wav_header(f)
    dst = split_format(src)
    max_frames = (max_bytes - _HEADER_BYTES) // dst.block_align
    if max_frames < 2 * dst.sample_rate:
        raise ValueError(f"a chunk limit of {max_bytes} bytes holds less than 2 s of audio")
    search = min(int(search_s * dst.sample_rate), max_frames // 10)
    chunker = Chunker(
        max_frames=max_frames,
        search_frames=search,
        window_frames=max(1, int(WINDOW_S * dst.sample_rate)),
        to_float=lambda frames: to_float(frames, dst),
    )
    writer = _ChunkWriter(open_chunk, dst)
    try:
        for block in _frames(f, src, dst, data_bytes):
            for piece in chunker.feed(block):
                writer.write(piece)
        for piece in chunker.close():
            writer.write(piece)
    except BaseException:
        writer.abort()
        raise
    if not writer.chunks:
        raise UnsupportedAudioError("the WAV file holds no audio")
    return writer.chunks
