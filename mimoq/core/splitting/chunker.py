"""PURE: a stream of frames cut into chunks of at most N frames, each cut at a quiet point."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mimoq.core.splitting.pcm import Floats, Frames
from mimoq.core.splitting.quiet import quietest_cut


@dataclass(frozen=True)
class ChunkFrames:
    """Consecutive frames of chunk ``index``; ``last`` closes that chunk."""

    index: int
    frames: Frames
    last: bool


class Chunker:
    """Cuts a stream of (frames, channels) blocks into chunks of at most ``max_frames``.

    Each chunk ends at the quietest point of its last ``search_frames`` (see
    :func:`quietest_cut`), so every chunk but the last is at least ``max_frames -
    search_frames`` long. Frames are handed on as soon as they cannot be part of a search
    region, so only about ``search_frames`` plus one block are ever held.
    """

    def __init__(
        self,
        *,
        max_frames: int,
        search_frames: int,
        window_frames: int,
        to_float: Callable[[Frames], Floats],
    ) -> None:
        if max_frames < 2 or not 0 <= search_frames <= max_frames // 2:
            raise ValueError("need max_frames >= 2 and 0 <= search_frames <= max_frames / 2")
        self._max = max_frames
        self._search = search_frames
        self._window = window_frames
        self._to_float = to_float
        self._pending: list[Frames] = []
        self._pending_n = 0
        self._emitted = 0  # frames of the current chunk already handed on
        self._index = 0
        self._empty: Frames = np.zeros((0, 1), dtype=np.int16)  # same shape/dtype as the input

    def _take(self, n: int) -> Frames:
        buf = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        head, rest = buf[:n], buf[n:]
        self._pending = [rest] if len(rest) else []
        self._pending_n = len(rest)
        return head

    def feed(self, block: Frames) -> list[ChunkFrames]:
        """Take the next block; return the pieces that are now decided."""
        self._empty = block[:0]
        if len(block):
            self._pending.append(block)
            self._pending_n += len(block)
        out: list[ChunkFrames] = []
        while self._pending_n:
            room = self._max - self._emitted
            safe = room - self._search  # >= 0: never more than safe frames are emitted early
            if self._pending_n >= room:
                buf = self._take(self._pending_n)
                region = self._to_float(buf[safe:room])
                cut = safe + quietest_cut(region, self._window)
                out.append(ChunkFrames(self._index, buf[:cut], last=True))
                self._pending, self._pending_n = (
                    ([buf[cut:]], len(buf) - cut) if cut < len(buf) else ([], 0)
                )
                self._index += 1
                self._emitted = 0
                continue
            if safe > 0:
                n = min(self._pending_n, safe)
                out.append(ChunkFrames(self._index, self._take(n), last=False))
                self._emitted += n
            break
        return out

    def close(self) -> list[ChunkFrames]:
        """The end of the stream: the rest closes the last chunk."""
        if self._pending_n:
            piece = ChunkFrames(self._index, self._take(self._pending_n), last=True)
            self._index += 1
            self._emitted = 0
            return [piece]
        if self._emitted:
            # The last chunk's frames all went out early: close it with no frames.
            self._emitted = 0
            self._index += 1
            return [ChunkFrames(self._index - 1, self._empty, last=True)]
        return []
