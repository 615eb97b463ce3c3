"""One pub/sub channel a worker hears for as long as it runs (its cancels, its accounts'
pauses): subscribed again after a lost connection, given up where Redis offers no pub/sub
for it (the embedded stand-in, an ACL without the channel), whose callers then read Redis
instead."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Final

import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError, RedisError, TimeoutError

log = structlog.get_logger("mimoq.worker")

#: Seconds between attempts to subscribe again after the connection dropped.
RESUBSCRIBE_S: Final = 0.5
#: Seconds one read of the subscription waits for a message (bounds how late a stop is seen).
READ_TIMEOUT_S: Final = 1.0


def _nothing() -> None:
    return None


async def listen(
    redis: Redis,
    channel: str,
    name: str,
    *,
    on_subscribed: Callable[[], Awaitable[None]],
    on_message: Callable[[str], Awaitable[None]],
    on_down: Callable[[], None] = _nothing,
) -> None:
    """Hear ``channel`` until cancelled: ``on_subscribed`` after each subscription (to catch
    up on what was published unheard), ``on_message`` with each message's text, and
    ``on_down`` whenever the subscription is not up (lost, given up, or stopped). Logs
    ``worker.<name>_lost`` and ``worker.<name>_unavailable``."""
    while True:
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel)
            await on_subscribed()
            while True:
                message = await pubsub.get_message(timeout=READ_TIMEOUT_S)
                if message is None or message.get("type") != "message":
                    continue
                data = message["data"]
                await on_message(data.decode() if isinstance(data, bytes) else str(data))
        except (ConnectionError, TimeoutError, OSError) as exc:
            log.warning(f"worker.{name}_lost", error=type(exc).__name__)
            on_down()  # (before the pause: its callers must not trust it meanwhile)
            await asyncio.sleep(RESUBSCRIBE_S)
        except (RedisError, NotImplementedError, AttributeError) as exc:
            log.warning(f"worker.{name}_unavailable", error=type(exc).__name__)
            return
        finally:
            on_down()
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
