"""A job that makes no MiMo call of its own (a long job's parent) gives its limiter ticket
back (core/scripts/limiter_release_ticket.lua): its slot goes to the schedule's last ticket,
not unused. Real Redis, the real acquire script, an injected clock."""

from __future__ import annotations

from dataclasses import replace

import pytest
from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.core.dialect_constants import TTS_MODEL
from mimoq.core.errors import CapacityDeferred
from mimoq.worker.limiter import RedisLimiter
from tests.support.limiter_tickets import schedule
from tests.worker.test_cancel_ticket import KEYS, SLOTS, deferred
from tests.worker.test_limiter import T0, Clock

pytestmark = pytest.mark.redis


async def test_the_parents_slot_goes_to_the_last_ticket(redis: ArqRedis) -> None:
    limiter = RedisLimiter(SLOTS, redis, clock=Clock())
    await limiter.acquire(TTS_MODEL, job_id="first")  # slot T0
    jobs = (("parent", "acme"), ("b1", "bolt"), ("b2", "bolt"))
    assert [await deferred(limiter, redis, job, tenant) for job, tenant in jobs] == [1, 2, 3]
    b2_was = await redis.zscore(wire.QUEUE_NAME, "b2")

    assert await limiter.release_ticket(TTS_MODEL, "parent") is True
    # b2 took the parent's slot and arq brings it back 2 slots sooner; acme holds nothing
    tickets = await schedule(redis, "acct", TTS_MODEL)
    assert tickets == [(b"b2", T0 + 1), (b"b1", T0 + 2)]
    assert await redis.zrange(KEYS["interactive_tickets"], 0, -1) == [b"b2", b"b1"]
    assert await redis.zscore(wire.QUEUE_NAME, "b2") == b2_was - 2000
    counts = await redis.hgetall(KEYS["tenant_tickets"])  # type: ignore[misc]
    assert b"interactive:acme" not in counts and counts[b"interactive:bolt"] == b"2"
    # the schedule ends where b2 was: the next job takes T0 + 3, not T0 + 4
    assert await deferred(limiter, redis, "b3", "bolt") == 3.0
    # nothing more to give back
    assert await limiter.release_ticket(TTS_MODEL, "parent") is False


async def test_the_last_ticket_given_back_ends_the_schedule_at_its_slot(
    redis: ArqRedis,
) -> None:
    limiter = RedisLimiter(SLOTS, redis, clock=Clock())
    await limiter.acquire(TTS_MODEL, job_id="first")
    assert [await deferred(limiter, redis, job, "acme") for job in ("a1", "parent")] == [1, 2]
    assert await limiter.release_ticket(TTS_MODEL, "parent") is True
    assert await schedule(redis, "acct", TTS_MODEL) == [(b"a1", T0 + 1)]
    assert await deferred(limiter, redis, "a2", "acme") == 2.0  # the parent's slot
    assert await limiter.release_ticket(TTS_MODEL, "no-such-job") is False


async def test_the_last_ticket_of_either_lane_takes_the_freed_slot(redis: ArqRedis) -> None:
    """The schedule is both lanes' tickets: the last one is found whichever lane it is in,
    and it moves within its own lane. (No bulk share: the bulk job queues after the
    interactive one instead of taking its slot.)"""
    limiter = RedisLimiter(replace(SLOTS, bulk_min_share=0.0), redis, clock=Clock())
    await limiter.acquire(TTS_MODEL, job_id="first")  # slot T0
    assert await deferred(limiter, redis, "parent", "acme") == 1.0  # interactive, T0 + 1
    with pytest.raises(CapacityDeferred) as bulk:
        await limiter.acquire(TTS_MODEL, job_id="late", lane="bulk", tenant="bolt")
    assert bulk.value.retry_after_s == 2.0  # bulk, T0 + 2: the schedule's last ticket

    assert await limiter.release_ticket(TTS_MODEL, "parent") is True
    assert await schedule(redis, "acct", TTS_MODEL) == [(b"late", T0 + 1)]
    assert await redis.zrange(KEYS["bulk_tickets"], 0, -1, withscores=True) == [(b"late", T0 + 1)]
    assert await redis.zcard(KEYS["interactive_tickets"]) == 0
