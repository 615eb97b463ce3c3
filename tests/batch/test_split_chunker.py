"""A stream of blocks cut into chunks: limits, tiling, quiet cuts and flat memory."""

from __future__ import annotations

import numpy as np
import pytest

from mimoq.core.audio import WavFormat
from mimoq.core.splitting.chunker import Chunker, ChunkFrames
from mimoq.core.splitting.pcm import to_float
from tests.batch.helpers import encode, gap_spans, tones

FMT = WavFormat(1_000, 1, 16)  # 1 kHz keeps the arithmetic readable: 1 frame = 1 ms


def run(total: np.ndarray, block: int, **kw: int) -> tuple[list[ChunkFrames], int]:
    chunker = Chunker(to_float=lambda f: to_float(f, FMT), **kw)
    pieces: list[ChunkFrames] = []
    held = 0
    for start in range(0, len(total), block):
        pieces += chunker.feed(total[start : start + block])
        held = max(held, chunker._pending_n)
    return pieces + chunker.close(), held


def chunk_lengths(pieces: list[ChunkFrames]) -> list[int]:
    lengths: dict[int, int] = {}
    for piece in pieces:
        lengths[piece.index] = lengths.get(piece.index, 0) + len(piece.frames)
    return [lengths[i] for i in sorted(lengths)]


@pytest.mark.parametrize("block", [1, 7, 100, 1000, 100_000])
@pytest.mark.parametrize(
    ("plan", "max_frames", "search", "lengths"),
    [
        # gaps at 40-41 s and 80-81 s of a 120 s recording; chunks of at most 50 s, cut in the
        # gap's middle (40.5 s), then again (+40 s): the last chunk is what is left
        ([(40, 1), (39, 1), (39, 0)], 50_000, 20_000, [40_500, 40_000, 39_500]),
        # no gap in the search region: cut somewhere in it, never past the limit
        ([(100, 0)], 30_000, 5_000, None),
        # shorter than one chunk: one chunk, whole
        ([(10, 0.5)], 30_000, 5_000, [10_500]),
    ],
)
def test_chunks_tile_the_stream_under_the_limit(
    plan: list[tuple[float, float]],
    max_frames: int,
    search: int,
    lengths: list[int] | None,
    block: int,
) -> None:
    mono = tones(FMT.sample_rate, plan, hz=50)
    frames = np.frombuffer(encode(mono, FMT), "<i2").reshape(-1, 1)
    pieces, held = run(frames, block, max_frames=max_frames, search_frames=search, window_frames=20)
    got = chunk_lengths(pieces)
    if lengths is not None:
        assert all(abs(g - e) <= 20 for g, e in zip(got, lengths, strict=True)), got
    assert all(n <= max_frames for n in got)
    assert all(n >= max_frames - search for n in got[:-1])
    assert np.array_equal(np.concatenate([p.frames for p in pieces]), frames)
    assert [p.index for p in pieces] == sorted(p.index for p in pieces)
    assert sum(p.last for p in pieces) == len(got)
    assert held <= search + block  # only a search region (and a block) is ever held


def test_cuts_land_in_the_gaps() -> None:
    plan = [(30 + i, 0.6) for i in range(6)]
    mono = tones(FMT.sample_rate, plan, hz=50)
    frames = np.frombuffer(encode(mono, FMT), "<i2").reshape(-1, 1)
    pieces, _ = run(frames, 500, max_frames=40_000, search_frames=15_000, window_frames=20)
    ends = np.cumsum(chunk_lengths(pieces))[:-1] / FMT.sample_rate
    gaps = gap_spans(plan)
    for end in ends:
        assert any(a <= end <= b for a, b in gaps), (end, gaps)


@pytest.mark.parametrize(("max_frames", "search"), [(1, 0), (100, 51), (100, -1)])
def test_refuses_impossible_limits(max_frames: int, search: int) -> None:
    with pytest.raises(ValueError):
        Chunker(max_frames=max_frames, search_frames=search, window_frames=1, to_float=lambda f: f)
