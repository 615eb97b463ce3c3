"""A worker's share of folding the usage journal (core/usage_journal.py): once per beat
interval from arq's poll loop, and once as it stops, so that the journal stays short
whatever the load (a report reads it whole) and an idle fleet leaves nothing in it."""

from __future__ import annotations

import time
from collections.abc import Callable

from redis.asyncio import Redis

from mimoq.core.usage_journal import fold_quietly


class UsageFolder:
    """Folds the journal at most once per ``interval_s`` (``fold_quietly``: a Redis error is
    logged, and the next tick or worker folds what is left)."""

    def __init__(self, interval_s: float, monotonic: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self._monotonic = monotonic
        # the first fold one interval after start, like every later one: a fleet starting
        # together does not fold at once, and what a stopped fleet left is folded then
        self._next = monotonic() + interval_s

    async def tick(self, redis: Redis) -> None:
        now = self._monotonic()
        if now < self._next:
            return
        self._next = now + self.interval_s
        await fold_quietly(redis)
