"""Dead letters: callback deliveries that gave up, kept in Redis until replayed.

One JSON record per delivery at ``DEAD_LETTER_PREFIX + delivery_id`` and its id in the
``DEAD_LETTER_INDEX`` sorted set, scored by when it died (both written by one script), so
listing is a ZRANGE over the index, never a KEYS scan.

Retention (``MIMOQ_DEAD_LETTER_TTL_S``, 30 days by default): a receiver down for a week
must not fill Redis. Each record expires that long after it died; each write also drops
the index entries older than that (``ZRANGEBYSCORE`` from the oldest end: O(log n) plus
what it drops, at most ``_TRIM_BATCH`` a write) together with their records (records
written before retention existed have no TTL of their own), and keeps the index itself
alive for as long as its newest record. Between writes, the index may still name a record
that expired; every reader skips those.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from enum import StrEnum
from typing import Final

from pydantic import BaseModel, ConfigDict, ValidationError
from redis.asyncio import Redis

from mimoq.core import scripts, wire
from mimoq.core.ssrf import redact_url
from mimoq.core.webhooks import Delivery

_PAGE = 200
#: Index entries dropped by one write at most: a backlog left by an older version (records
#: without a TTL) shrinks over a few writes instead of in one long script.
_TRIM_BATCH: Final = 100


class DeadLetterReason(StrEnum):
    exhausted = "exhausted"  # every attempt of the schedule failed with a retryable answer
    final_status = "final_status"  # the receiver answered a final 4xx
    gone = "gone"  # 410: the endpoint no longer exists
    refused = "refused"  # the URL reached a refused address at delivery (e.g. DNS rebinding)
    invalid = "invalid"  # the delivery job itself was malformed (a foreign producer)
    redirect = "redirect"  # the receiver answered 3xx (never followed); see last_location
    internal = "internal"  # mimoq itself failed to make the attempt (see the worker's log)


class DeadLetter(BaseModel):
    """A delivery that gave up: everything needed to look into it and to replay it."""

    model_config = ConfigDict(extra="ignore")

    delivery: Delivery
    reason: DeadLetterReason
    attempts: int
    last_error: str | None = None
    last_status: int | None = None
    last_location: str | None = None  # a 3xx's Location
    dead_at: float

    @property
    def delivery_id(self) -> str:
        return self.delivery.delivery_id

    def summary(self) -> dict[str, object]:
        """The listing view: no body, no header values, no URL path or query."""
        out: dict[str, object] = {
            "delivery_id": self.delivery.delivery_id,
            "job_id": self.delivery.job_id,
            "reason": self.reason.value,
            "attempts": self.attempts,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "target": redact_url(self.delivery.url),
            "dead_at": self.dead_at,
        }
        if self.last_location:
            out["location"] = redact_url(self.last_location)
        return out


def _key(delivery_id: str) -> str:
    return wire.DEAD_LETTER_PREFIX + delivery_id


async def put(redis: Redis, letter: DeadLetter, *, ttl_s: int) -> int:
    """Store (or overwrite, when a replay died again) a dead letter, kept ``ttl_s`` seconds,
    and index it; drops what retention says is over. Returns how many old ones it dropped."""
    dropped = await scripts.named("dead_letter_put").run(
        redis,
        [_key(letter.delivery_id), wire.DEAD_LETTER_INDEX],
        [
            letter.delivery_id,
            wire.dumps(letter.model_dump(mode="json")),
            repr(letter.dead_at),
            str(ttl_s),
            wire.DEAD_LETTER_PREFIX,
            repr(time.time() - ttl_s),
            str(_TRIM_BATCH),
        ],
    )
    return int(dropped)


async def count(redis: Redis, *, ttl_s: int) -> int:
    """Dead letters within retention (index entries past it are not counted)."""
    return int(await redis.zcount(wire.DEAD_LETTER_INDEX, time.time() - ttl_s, "+inf"))


async def expiries(redis: Redis, delivery_ids: list[str]) -> dict[str, float | None]:
    """When each record expires (unix seconds); None for one kept without a TTL."""
    async with redis.pipeline(transaction=False) as pipe:
        for delivery_id in delivery_ids:
            pipe.pttl(_key(delivery_id))
        ttls = await pipe.execute()
    now = time.time()
    return {
        i: (now + ms / 1000 if ms >= 0 else None) for i, ms in zip(delivery_ids, ttls, strict=True)
    }


async def get(redis: Redis, delivery_id: str) -> DeadLetter | None:
    raw = await redis.get(_key(delivery_id))
    return None if raw is None else DeadLetter.model_validate_json(raw)


async def remove(redis: Redis, delivery_id: str) -> bool:
    """Drop a dead letter (after its replay was delivered); True if there was one."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(_key(delivery_id))
        pipe.zrem(wire.DEAD_LETTER_INDEX, delivery_id)
        deleted, _ = await pipe.execute()
    return bool(deleted)


async def iterate(
    redis: Redis, *, job_id: str | None = None, reason: DeadLetterReason | None = None
) -> AsyncIterator[DeadLetter]:
    """Dead letters, newest first, optionally filtered; pages through the index."""
    start = 0
    while True:
        ids = await redis.zrevrange(wire.DEAD_LETTER_INDEX, start, start + _PAGE - 1)
        if not ids:
            return
        start += len(ids)
        raws = await redis.mget([_key(i.decode() if isinstance(i, bytes) else i) for i in ids])
        for raw in raws:
            if raw is None:  # removed between the two reads
                continue
            try:
                letter = DeadLetter.model_validate_json(raw)
            except ValidationError:
                continue  # not ours to judge here; `show` reports it
            if job_id is not None and letter.delivery.job_id != job_id:
                continue
            if reason is not None and letter.reason != reason:
                continue
            yield letter
