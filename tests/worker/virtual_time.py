"""Virtual time for several concurrent coroutines: sleeps cost no real time.

``VirtualTime.gather`` runs coroutines as tasks on the real event loop. A coroutine that
calls ``sleep`` is *parked*; one awaiting anything else (real Redis I/O, say) is *running*.
Only when every coroutine is parked or done does the clock jump to the earliest wake-up,
and all the sleepers due at that instant resume together (in the order they parked). So a
fleet of workers on real Redis connections keeps its real concurrency and Lua atomicity,
while minutes of deferrals take as long as the Redis round trips.

Quiescence is counted, not polled: ``_running`` is how many gathered coroutines are
neither parked nor done, and ``_idle`` is set whenever it drops to zero. A sleeper woken
is counted as running *before* its future resolves, so the gap until it actually runs is
never mistaken for quiescence.

Only the gathered coroutines themselves (and what they await directly) may ``sleep``: a
task they spawn is not counted. A coroutine waiting for another one (an ``Event``, say)
counts as running, so the clock would never move: coordinate through ``sleep`` only.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class VirtualTime:
    """A clock that moves only when every coroutine it runs is asleep."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self._now = start
        self._wakeups: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._running = 0
        self._idle = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    def clock(self) -> float:
        """Virtual now, in seconds (a ``RedisLimiter(clock=...)``)."""
        return self._now

    async def sleep(self, delay: float) -> None:
        """Park the calling coroutine until virtual time reaches now + ``delay``."""
        if asyncio.current_task() not in self._tasks:
            raise RuntimeError(
                "VirtualTime.sleep outside VirtualTime.gather: nothing would wake it"
            )
        wake = asyncio.get_running_loop().create_future()
        heapq.heappush(self._wakeups, (self._now + max(delay, 0.0), next(self._order), wake))
        self._park()
        try:
            await wake
        except asyncio.CancelledError:
            if wake.cancelled():  # cancelled while parked: not counted as running yet
                self._running += 1
            raise

    async def gather(self, *coros: Coroutine[Any, Any, T]) -> list[T]:
        """Run ``coros`` concurrently to the end, advancing the clock when all are parked;
        their results in order. The first error cancels the rest and is raised."""
        if self._tasks:
            raise RuntimeError("VirtualTime.gather is not reentrant")
        self._running = len(coros)
        self._idle.clear()
        tasks = [asyncio.ensure_future(self._track(coro)) for coro in coros]
        self._tasks = set(tasks)
        try:
            while True:
                if not self._running:
                    self._idle.set()
                await self._idle.wait()
                self._idle.clear()
                for task in tasks:
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        await task  # raises its error
                if all(t.done() for t in tasks):
                    return [t.result() for t in tasks]
                self._wake_earliest()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks = set()
            self._wakeups.clear()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """``gather`` of one coroutine."""
        (result,) = await self.gather(coro)
        return result

    def _park(self) -> None:
        self._running -= 1
        if not self._running:
            self._idle.set()

    async def _track(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            return await coro
        finally:
            self._park()

    def _wake_earliest(self) -> None:
        """Move the clock to the earliest wake-up and resume every sleeper due then."""
        # every coroutine is parked or done, and not all are done: some sleeper is parked
        assert self._wakeups, "parked coroutines without a wake-up"
        self._now = max(self._now, self._wakeups[0][0])
        while self._wakeups and self._wakeups[0][0] <= self._now:
            _, _, wake = heapq.heappop(self._wakeups)
            self._running += 1
            wake.set_result(None)
