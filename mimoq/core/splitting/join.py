"""WAV parts joined, sample-exactly, into one WAV or raw PCM of one format."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Final

from mimoq.core.audio import AudioContainer, AudioInfo, AudioSink, WavFormat
from mimoq.core.splitting.pcm import iter_pcm_blocks
from mimoq.core.splitting.resample import Converter
from mimoq.core.splitting.wavsplit import read_wav_header

_BLOCK_BYTES: Final = 1 << 20


def join_wavs(parts: Sequence[Path], out: BinaryIO, *, output: AudioContainer) -> AudioInfo:
    """Concatenate the samples of ``parts`` (WAV files, in order) into ``out``.

    Parts in the first part's format are copied byte for byte, so the result's length is
    exactly the sum of theirs. A part in another format (a provider changing its sample
    rate mid-job) is converted to 16-bit at the first part's rate and channel count, and
    then the whole output is 16-bit: one file never mixes formats. Headers of the parts
    (their LIST/INFO chunks and the like) are not carried over. Streams: one block in memory.
    """
    if not parts:
        raise ValueError("nothing to join")
    formats: list[tuple[WavFormat, int | None]] = []
    for part in parts:
        with open(part, "rb") as f:
            formats.append(read_wav_header(f))
    first = formats[0][0]
    uniform = all(fmt == first for fmt, _ in formats)
    target = first if uniform else WavFormat(first.sample_rate, first.channels, 16)
    sink = AudioSink(out, source="pcm", output=output, pcm_format=target)
    for part, (fmt, data_bytes) in zip(parts, formats, strict=True):
        with open(part, "rb") as f:
            read_wav_header(f)
            # Whole frames only: half a sample would shift every part after this one.
            size = os.fstat(f.fileno()).st_size - f.tell() if data_bytes is None else data_bytes
            size -= size % fmt.block_align
            if fmt == target:
                _copy_samples(f, size, sink)
                continue
            converter = Converter(fmt, target)
            for block in iter_pcm_blocks(f, fmt, size, max(1, _BLOCK_BYTES // fmt.block_align)):
                sink.write(converter.convert(block).tobytes())
            sink.write(converter.flush().tobytes())
    return sink.finish()


def _copy_samples(f: BinaryIO, size: int, sink: AudioSink) -> None:
    while size > 0:
        data = f.read(min(_BLOCK_BYTES, size))
        if not data:
            return
        size -= len(data)
        sink.write(data)
