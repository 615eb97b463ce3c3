"""Being told when a job finishes: one pub/sub connection per producer, shared by its waits.

The finish path publishes a job's status on ``mimoq:done:<id>`` right after writing its
result record (``mimoq.core.results.write_result_safely``). A wait subscribes to its job's
channel on this producer's one pub/sub connection, and only once Redis has confirmed the
subscription does it read the record (so a finish between the two is not missed). The
connection is opened by the first wait and closed when the last one ends: an idle producer
holds none, and a wait costs SUBSCRIBE, UNSUBSCRIBE and two GETs (plus a fallback read).

A message can still be missed (the connection drops and comes back): the reader then wakes
every wait to read its record once, and each wait also reads it every ``fallback_s``
seconds. Where pub/sub is refused (an ACL user without the channel) a wait is told so and
polls as before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Final

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from mimoq.core import wire

log = structlog.get_logger("mimoq.producer")

#: How long a wait waits for Redis to confirm its subscription before polling instead.
CONFIRM_S: Final = 5.0
#: The reader's longest blocking read: how soon it sees channels to unsubscribe.
_READ_S: Final = 1.0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ResultWatch:
    """Wakes the waits of a job when its result is published (see the module's text)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._confirming: dict[str, asyncio.Future[bool]] = {}
        self._subscribed: set[str] = set()
        self._unsubscribe: set[str] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def watching(self, job_id: str) -> AsyncIterator[asyncio.Event | None]:
        """An event set whenever the job's result may have been written; None when pub/sub
        is not available (the caller polls)."""
        channel = wire.done_channel(job_id)
        event = asyncio.Event()
        self._waiters.setdefault(channel, set()).add(event)
        self._unsubscribe.discard(channel)
        try:
            yield event if await self._subscribe(channel) else None
        finally:
            await self._leave(channel, event)

    async def _subscribe(self, channel: str) -> bool:
        if channel in self._subscribed:
            return True
        confirmed = self._confirming.get(channel)
        if confirmed is None:
            confirmed = self._confirming[channel] = asyncio.get_running_loop().create_future()
            try:
                # One at a time: redis-py's PubSub takes a new connection for each of
                # several first subscribes made at once.
                async with self._lock:
                    if self._pubsub is None:
                        self._pubsub = self._redis.pubsub()
                    await self._pubsub.subscribe(channel)
            except (RedisError, OSError) as exc:
                log.warning("producer.subscribe_failed", error=type(exc).__name__)
                # Other waits on this job await the same confirmation: they poll too.
                if not confirmed.done():
                    confirmed.set_result(False)
                self._confirming.pop(channel, None)
                return False
            if self._reader is None:
                self._reader = asyncio.create_task(self._read(self._pubsub))
        try:
            async with asyncio.timeout(CONFIRM_S):  # not wait_for: see Producer.wait
                return await asyncio.shield(confirmed)
        except TimeoutError:
            return False

    async def _leave(self, channel: str, event: asyncio.Event) -> None:
        waiting = self._waiters.get(channel, set())
        waiting.discard(event)
        if waiting:
            return
        self._waiters.pop(channel, None)
        if self._waiters:  # others wait on other jobs: the reader unsubscribes this one
            self._unsubscribe.add(channel)
            return
        pubsub, reader = self._pubsub, self._reader
        self._pubsub = self._reader = None
        self._subscribed.clear()
        for pending in self._confirming.values():
            pending.cancel()
        self._confirming.clear()
        self._unsubscribe.clear()
        if pubsub is not None:
            closing = asyncio.create_task(_close(pubsub, reader))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
            # Shielded: a wait cancelled here (its timeout, a Ctrl-C) still leaves nothing
            # open, and its cancel goes on up (swallowed, a Ctrl-C of `mimoq batch` was lost
            # and the run went on to the end).
            await asyncio.shield(closing)

    async def aclose(self) -> None:
        """Wait for connections being closed (waits still running keep theirs)."""
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def _read(self, pubsub: PubSub) -> None:
        while True:
            try:
                if self._unsubscribe:
                    gone = sorted(self._unsubscribe)
                    self._unsubscribe.clear()
                    self._subscribed.difference_update(gone)
                    await pubsub.unsubscribe(*gone)
                message = await pubsub.get_message(timeout=_READ_S)
            except (RedisError, OSError) as exc:
                # Messages may have been lost: every wait reads its record once more (and
                # waits not yet confirmed poll). redis-py subscribes again on reconnection.
                log.warning("producer.result_watch_failed", error=type(exc).__name__)
                self._wake_all(confirm=False)
                await asyncio.sleep(_READ_S)
                continue
            if message is not None:
                self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        channel = _text(message.get("channel"))
        if message.get("type") == "subscribe":
            self._subscribed.add(channel)
            confirmed = self._confirming.pop(channel, None)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(True)
        elif message.get("type") == "message":
            for event in self._waiters.get(channel, ()):
                event.set()

    def _wake_all(self, *, confirm: bool) -> None:
        for confirmed in self._confirming.values():
            if not confirmed.done():
                confirmed.set_result(confirm)
        self._confirming.clear()
        for events in self._waiters.values():
            for event in events:
                event.set()


async def _close(pubsub: PubSub, reader: asyncio.Task[None] | None) -> None:
    if reader is not None:
        reader.cancel()
        await asyncio.wait([reader])  # its end, without taking its CancelledError for ours
    with contextlib.suppress(RedisError, OSError):
        # Said, not left to the disconnection: the embedded Redis keeps a closed client's
        # subscriptions otherwise.
        await pubsub.unsubscribe()
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
