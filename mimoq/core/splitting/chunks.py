"""What a split produced: chunk files, their time ranges, and the writer that opens them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

#: Opens chunk ``index`` for writing; the file is complete when the context exits cleanly
#: (``Storage.open_atomic`` with a per-chunk key is one).
OpenChunk = Callable[[int], contextlib.AbstractContextManager[BinaryIO]]


class UnsupportedAudioError(ValueError):
    """Audio mimoq cannot read, split or convert; the message says what would help."""


@dataclass(frozen=True)
class AudioChunk:
    """One chunk of a split recording: where it sits in the original, and its size."""

    index: int
    start_s: float
    end_s: float
    bytes: int

    def span(self) -> str:
        """``12:34.5-16:20.0``: the chunk's time range, for messages."""
        return f"{clock(self.start_s)}-{clock(self.end_s)}"


def clock(seconds: float) -> str:
    """``h:mm:ss.s`` (or ``m:ss.s`` under an hour), as time ranges are shown in messages."""
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{secs:04.1f}" if hours else f"{minutes}:{secs:04.1f}"
