"""A tenant held at its limit gives its limiter tickets back
(core/scripts/limiter_release_tenant.lua): each slot it reserved goes to the schedule's last
ticket, not unused. Real Redis, the real acquire and release scripts, an injected clock."""

from __future__ import annotations

import pytest
from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.core.dialect_constants import TTS_MODEL
from mimoq.worker.limiter import RedisLimiter
from tests.support.limiter_tickets import schedule
from tests.worker.test_cancel_ticket import KEYS, SLOTS, deferred
from tests.worker.test_limiter import T0, Clock

pytestmark = pytest.mark.redis


async def test_a_held_tenants_slots_go_to_the_last_tickets(redis: ArqRedis) -> None:
    limiter = RedisLimiter(SLOTS, redis, clock=Clock())
    await limiter.acquire(TTS_MODEL, job_id="first")  # slot T0
    jobs = (("a1", "acme"), ("b1", "bolt"), ("a2", "acme"), ("b2", "bolt"))
    waits = [await deferred(limiter, redis, job, tenant) for job, tenant in jobs]
    assert waits == [1.0, 2.0, 3.0, 4.0]
    b2_was = await redis.zscore(wire.QUEUE_NAME, "b2")

    assert await limiter.release_tenant(TTS_MODEL, "acme") == 2
    # acme holds nothing; bolt's last ticket took acme's first slot and arq brings its job
    # back 3 slots sooner; acme's second slot is past bolt's last: the schedule ends there
    tickets = await schedule(redis, "acct", TTS_MODEL)
    assert tickets == [(b"b2", T0 + 1), (b"b1", T0 + 2)]
    assert await redis.zrange(KEYS["interactive_tickets"], 0, -1) == [b"b2", b"b1"]
    counts = await redis.hgetall(KEYS["tenant_tickets"])  # type: ignore[misc]
    assert b"interactive:acme" not in counts and counts[b"interactive:bolt"] == b"2"
    assert set(await redis.hkeys(KEYS["ticket_tenant"])) == {b"b1", b"b2"}  # type: ignore[misc]
    assert await redis.zscore(wire.QUEUE_NAME, "b2") == b2_was - 3000
    assert await deferred(limiter, redis, "b3", "bolt") == 3.0  # T0 + 3, not T0 + 5
    # nothing more to give back
    assert await limiter.release_tenant(TTS_MODEL, "acme") == 0


async def test_a_tenant_without_tickets_changes_nothing(redis: ArqRedis) -> None:
    limiter = RedisLimiter(SLOTS, redis, clock=Clock())
    await limiter.acquire(TTS_MODEL, job_id="first")
    await deferred(limiter, redis, "b1", "bolt")
    before = await redis.hgetall(KEYS["state"])  # type: ignore[misc]
    assert await limiter.release_tenant(TTS_MODEL, "acme") == 0
    assert await limiter.release_tenant(TTS_MODEL, None) == 0  # the jobs that name none
    assert await schedule(redis, "acct", TTS_MODEL) == [(b"b1", T0 + 1)]
    assert await redis.hgetall(KEYS["state"]) == before  # type: ignore[misc]
