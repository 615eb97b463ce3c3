"""Decoded recordings measured window by window, and cut into the pieces ``pauses`` plans.

The recording is first decoded to 16 kHz mono 16-bit WAV (``convert.convert_to_wav``),
the one format every piece is written in; both passes here stream it a block at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np

from mimoq.core.audio import AudioSink, WavFormat
from mimoq.core.splitting.chunks import AudioChunk, OpenChunk, UnsupportedAudioError
from mimoq.core.splitting.pauses import WINDOW_S, Energies, Piece
from mimoq.core.splitting.resample import SPLIT_FORMAT
from mimoq.core.splitting.wavsplit import read_wav_header

_BLOCK_WINDOWS: Final = 500  # 10 s of audio per read


def _open_source(f: BinaryIO) -> tuple[WavFormat, int, int]:
    """(format, first sample byte, sample bytes) of a decoded recording."""
    fmt, data_bytes = read_wav_header(f)
    if fmt != SPLIT_FORMAT:
        raise UnsupportedAudioError(f"expected 16 kHz mono 16-bit audio, got {fmt}")
    offset = f.tell()
    size = f.seek(0, 2) - offset
    f.seek(offset)
    return fmt, offset, size if data_bytes is None else min(size, data_bytes)


def window_frames(fmt: WavFormat = SPLIT_FORMAT) -> int:
    """Samples in one loudness window."""
    return round(WINDOW_S * fmt.sample_rate)


def window_energies(source: Path) -> Energies:
    """Mean power of every 20 ms window of the decoded recording at ``source`` (the last
    window may be shorter). Memory: one block of audio, and 8 bytes per window."""
    with open(source, "rb") as f:
        fmt, _, size = _open_source(f)
        per = window_frames(fmt)
        total = size // fmt.block_align
        out = np.empty((total + per - 1) // per, dtype=np.float64)
        done = 0
        while done < len(out):
            count = min(_BLOCK_WINDOWS, len(out) - done)
            frames = min(count * per, total - done * per)
            raw = f.read(frames * fmt.block_align)
            samples = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0
            squares = np.square(samples)
            whole = (len(squares) // per) * per
            energies = squares[:whole].reshape(-1, per).mean(axis=1)
            if whole < len(squares):
                energies = np.append(energies, squares[whole:].mean())
            out[done : done + len(energies)] = energies
            done += len(energies)
            if not raw:
                break
        return out[:done]


def write_pieces(source: Path, pieces: Sequence[Piece], open_chunk: OpenChunk) -> list[AudioChunk]:
    """Write each piece's spans of ``source`` as one WAV chunk file.

    A chunk's ``start_s``/``end_s`` are where its speech starts and ends in the original
    recording (decoding keeps the timeline), whatever was left out around or inside it.
    """
    chunks: list[AudioChunk] = []
    with open(source, "rb") as f:
        fmt, offset, size = _open_source(f)
        per = window_frames(fmt)
        total = size // fmt.block_align
        for index, piece in enumerate(pieces):
            with open_chunk(index) as out:
                sink = AudioSink(out, source="pcm", output="wav", pcm_format=fmt)
                for start, end in piece.spans:
                    first, stop = min(start * per, total), min(end * per, total)
                    f.seek(offset + first * fmt.block_align)
                    left = (stop - first) * fmt.block_align
                    while left > 0:
                        data = f.read(min(left, 1 << 20))
                        if not data:
                            break
                        sink.write(data)
                        left -= len(data)
                info = sink.finish()
            start_s = min(piece.speech_start * per, total) / fmt.sample_rate
            end_s = min(piece.speech_end * per, total) / fmt.sample_rate
            chunks.append(AudioChunk(index, start_s, end_s, info.bytes))
    return chunks
