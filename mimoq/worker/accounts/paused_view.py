"""The paused accounts as this worker process knows them: read once per change, not per call.

Every MiMo call asks whether its account is paused (``breaker.py``). Read from Redis, that
was one round trip per call: 1.7 a job in ``bench/redis_cost.py``'s mix, on a set that
changes a few times a day (issue #22). The breaker's scripts, and ``mimoq accounts
resume``, publish each change of the set on ``wire.ACCOUNTS_CHANGED_CHANNEL``. One
subscription per process reads the set again on each message, and calls use that copy.

Calls read Redis, as before, whenever the copy cannot be trusted: before the subscription
is up, while it is down (a lost connection; a Redis without pub/sub, such as the embedded
stand-in), and while a re-read after a message is under way. A change made without a
message (a mimoq older than this one, a hand edit) is picked up at the next heartbeat
(``refresh``). A call that read the set just before a change was possible before too: its
answer tells the breaker, and the job is deferred, not lost.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from mimoq.core import wire
from mimoq.worker import channel_watch


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class PausedView:
    """The set ``wire.ACCOUNTS_PAUSED_KEY``, kept by ``watch`` while it is subscribed."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        #: The set as last read while subscribed with no change heard since (None: ask Redis).
        self._known: frozenset[str] | None = None
        #: Changes heard so far: a read that began before one must not be kept.
        self._changes = 0
        self._subscribed = False

    def known(self) -> frozenset[str] | None:
        """The paused accounts without a read, or None when Redis must be asked."""
        return self._known

    async def read(self) -> frozenset[str]:
        """The paused accounts: the kept copy, or one read of Redis."""
        if self._known is not None:
            return self._known
        return await self._fetch()

    async def refresh(self) -> frozenset[str]:
        """Read Redis (each heartbeat), and keep what it says while subscribed: the
        backstop for a change that came without a message."""
        return await self._learn()

    async def _fetch(self) -> frozenset[str]:
        members = await self._redis.smembers(wire.ACCOUNTS_PAUSED_KEY)  # type: ignore[misc]
        return frozenset(_text(m) for m in members)

    async def _learn(self) -> frozenset[str]:
        changes = self._changes
        names = await self._fetch()
        if self._subscribed and changes == self._changes:
            self._known = names
        return names

    def _changed(self) -> None:
        self._changes += 1
        self._known = None

    async def watch(self) -> None:
        """The process's subscription (runs until cancelled at shutdown). Without one (the
        embedded stand-in, an ACL without the channel) every call reads the set, as it
        always did."""
        await channel_watch.listen(
            self._redis,
            wire.ACCOUNTS_CHANGED_CHANNEL,
            "paused_watch",
            on_subscribed=self._subscribed_now,
            on_message=self._heard,
            on_down=self._forget,
        )

    async def _subscribed_now(self) -> None:
        # subscribed first, then read: no change can fall between the two
        self._subscribed = True
        await self._learn()

    async def _heard(self, _: str) -> None:
        self._changed()
        await self._learn()

    def _forget(self) -> None:
        self._subscribed = False
        self._changed()
