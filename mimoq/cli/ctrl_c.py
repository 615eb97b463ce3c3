"""Ctrl-C for a long command (``mimoq batch``): the first press asks the run to stop, the
second stops at once.

asyncio.run's own handler only cancels the main task, and a cancellation can be lost on
its way: one that lands while the task is inside the embedded Redis client (fakeredis
over redis-py) was seen to vanish in about 1 interrupted run in 10 on a loaded host, and
the run then went on to its end. So the first press also sets a flag the run reads on
every poll, which nothing between here and there can swallow.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from contextlib import contextmanager


class CtrlC:
    """Whether Ctrl-C was pressed during ``watch``; ``requested`` is what the run polls."""

    def __init__(self) -> None:
        self.presses = 0
        self._task: asyncio.Task[object] | None = None

    def requested(self) -> bool:
        return self.presses > 0

    def _pressed(self) -> None:
        self.presses += 1
        if self.presses > 1:
            raise KeyboardInterrupt  # out of the event loop: the process exits 130
        if self._task is not None:
            self._task.cancel()

    @contextmanager
    def watch(self) -> Iterator[CtrlC]:
        """Handle SIGINT in the running loop for the block (the caller's task is the one a
        first press cancels); the default handler comes back after it."""
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        loop.add_signal_handler(signal.SIGINT, self._pressed)
        try:
            yield self
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            self._task = None
