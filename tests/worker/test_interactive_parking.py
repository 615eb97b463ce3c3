"""Interactive jobs over their lane's share are parked (limiter_acquire.lua, park): out of
arq's queue, back at the head of their tenant's waiting list, and admitted again one at a
time as their tenant's ticket is granted (limiter_common.lua, admit_interactive), instead of
asking again (a pick and a decision) every time the schedule has run. Real Redis, the real
enqueue, acquire and admission scripts, an injected limiter clock."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.core.dialect_constants import TTS_MODEL
from mimoq.core.errors import CapacityDeferred
from mimoq.worker.limiter import RedisLimiter
from mimoq.worker.limiter.core import ADMIT_INTERVAL_S
from tests.support.limiter_tickets import schedule
from tests.worker.test_cancel_ticket import KEYS, SLOTS
from tests.worker.test_limiter import SECONDS, T0, Clock

pytestmark = pytest.mark.redis
LIST = wire.wait_list_key(TTS_MODEL, "acme", "interactive")
ADMITTED = wire.interactive_admitted_key(TTS_MODEL, "acme")


async def enqueue(redis: ArqRedis, job_id: str, lane: str, tenant: str) -> None:
    """As any producer: the enqueue script (interactive jobs go straight to the queue, up to
    16 a tenant; bulk ones wait for admission after the first)."""
    job = {"kind": "speech", "input": "hi", "priority": lane, "tenant": tenant}
    keys = wire.enqueue_keys(job_id)
    assert await redis.eval(wire.enqueue_script(), 4, *keys, job_id, json.dumps(job)) == 1


async def ask(limiter: RedisLimiter, job_id: str, lane: str = "interactive") -> str:
    """One acquire of a job of tenant acme: "granted" or the decision."""
    try:
        await limiter.acquire(TTS_MODEL, job_id=job_id, lane=lane, tenant="acme")
    except CapacityDeferred as exc:
        found = re.search(r"\((\w+)\)", str(exc))
        assert found is not None
        return found[1]
    return "granted"


async def queued(redis: ArqRedis, *job_ids: str) -> list[bool]:
    return [await redis.zscore(wire.QUEUE_NAME, j) is not None for j in job_ids]


async def test_over_its_share_a_job_waits_in_its_list_until_its_tenants_ticket_is_granted(
    redis: ArqRedis,
) -> None:
    clock = Clock()
    limiter = RedisLimiter(SLOTS, redis, clock=clock)
    # the bulk lane holds slots: b0 granted at T0, b1 and b2 queued at T0 + 1, T0 + 2
    for job_id in ("b0", "b1", "b2"):
        await enqueue(redis, job_id, "bulk", "bolt")
    assert [await ask(limiter, j, "bulk") for j in ("b0", "b1", "b2")] == [
        "granted", "ticket", "ticket",
    ]  # fmt: skip
    for job_id in ("i1", "i2", "i3"):
        await enqueue(redis, job_id, "interactive", "acme")
    assert await queued(redis, "i1", "i2", "i3") == [True, True, True]

    # i1 and i2 take the bulk slots (the bulk lane's share of 0.5 allows two); i3 is over
    # the share, and acme holds tickets: parked
    assert [await ask(limiter, j) for j in ("i1", "i2", "i3")] == ["ticket", "ticket", "parked"]
    assert await queued(redis, "i3") == [False]
    assert await redis.zscore(ADMITTED, "i3") is None
    assert await redis.lrange(LIST, 0, -1) == [b"i3"]
    assert acme_in(await redis.lrange(wire.wait_ring_key(TTS_MODEL, "interactive"), 0, -1))
    assert TTS_MODEL.encode() in await redis.smembers(wire.WAIT_MODELS_KEY)  # type: ignore[misc]
    # the lane is marked over its share for enqueue.lua, for an admission round at most
    mark = wire.interactive_over_share_key(TTS_MODEL)
    assert 0 < await redis.pttl(mark) <= min(SLOTS.window_s, ADMIT_INTERVAL_S) * 1000
    # a job enqueued now waits behind it; and a parked job is counted
    await enqueue(redis, "i4", "interactive", "acme")
    assert await redis.lrange(LIST, 0, -1) == [b"i3", b"i4"]
    assert (await limiter.snapshot(TTS_MODEL)).lanes["parked"] == 1

    # i1's grant: acme still holds i2's ticket, the lane is still over its share: no room
    clock.now = T0 + 1
    assert await ask(limiter, "i1") == "granted"
    assert await redis.lrange(LIST, 0, -1) == [b"i3", b"i4"]
    # i2's grant: acme holds none now; one job comes back, the parked one first
    clock.now = T0 + 2
    assert await ask(limiter, "i2") == "granted"
    assert await queued(redis, "i3", "i4") == [True, False]
    assert await redis.zscore(ADMITTED, "i3") is not None
    assert await redis.lrange(LIST, 0, -1) == [b"i4"]

    # once the bulk lane holds no slot the lane is not over its share: i3 takes a ticket,
    # and its grant tops acme up as before (up to 16 in the queue)
    clock.now = T0 + 3
    assert [await ask(limiter, j, "bulk") for j in ("b1", "b2")] == ["granted", "ticket"]
    clock.now = T0 + 4
    assert await ask(limiter, "b2", "bulk") == "granted"
    assert await redis.zcard(KEYS["bulk_tickets"]) == 0
    assert await ask(limiter, "i3") == "ticket"
    clock.now = T0 + 5
    assert await ask(limiter, "i3") == "granted"
    assert await queued(redis, "i4") == [True]
    assert await redis.llen(LIST) == 0
    assert not acme_in(await redis.lrange(wire.wait_ring_key(TTS_MODEL, "interactive"), 0, -1))


def acme_in(ring: list[bytes]) -> bool:
    return b"acme" in ring


async def test_a_caller_outside_arq_is_told_to_ask_again_not_parked(redis: ArqRedis) -> None:
    """A job not in arq's queue (a caller that asks the limiter itself) cannot be taken out
    of it: it gets the share deferral as before, and nothing is written to its lists."""
    limiter = RedisLimiter(SLOTS, redis, clock=Clock())
    for job_id in ("b0", "b1", "b2"):
        await enqueue(redis, job_id, "bulk", "bolt")
    assert [await ask(limiter, j, "bulk") for j in ("b0", "b1", "b2")] == [
        "granted",
        "ticket",
        "ticket",
    ]
    assert [await ask(limiter, j) for j in ("x1", "x2", "x3")] == ["ticket", "ticket", "share"]
    assert not await redis.exists(LIST)
    assert (await limiter.snapshot(TTS_MODEL)).lanes["parked"] == 0


async def test_a_bursts_first_grant_admits_the_bulk_look_ahead_before_a_tenants_jobs(
    redis: ArqRedis,
) -> None:
    """At a burst's start nothing holds a slot yet. The first grant admits the bulk look-ahead
    first, with its slots, then its tenant's next interactive jobs, which see those slots as
    their asks will: over the lane's share, only the one to take the tenant's ticket comes
    into the queue. The other way round, the tenant's jobs came in as if the lane had room,
    the look-ahead's tickets came next, and all but one were parked at their asks."""
    clock = Clock()
    config = replace(SECONDS, hold_s=5.0, lookahead_s=8.0)
    limiter = RedisLimiter(config, redis, clock=clock, sleep=clock.sleep)
    asker = RedisLimiter(config, redis, clock=clock)  # asks as a worker would, never waits
    for job_id in ["lead"] + [f"b{i}" for i in range(10)]:
        await enqueue(redis, job_id, "bulk", "bolt")
    zip_ids = [f"z{i}" for i in range(wire.INTERACTIVE_DIRECT + 6)]
    for job_id in zip_ids:
        await enqueue(redis, job_id, "interactive", "zip")
    # the tenant's first 16 went straight in; all but z0 have run meanwhile
    zip_admitted = wire.interactive_admitted_key(TTS_MODEL, "zip")
    assert await redis.zrem(zip_admitted, *zip_ids[1:16]) == 15
    await redis.zrem(wire.QUEUE_NAME, *zip_ids[1:16])

    lease = await limiter.acquire(TTS_MODEL, job_id="z0", lane="interactive", tenant="zip")
    assert lease.granted_at == T0
    # the look-ahead holds its slots
    assert sum(j.startswith(b"b") for j, _ in await schedule(redis, "acct", TTS_MODEL)) >= 4
    came_in = [j.decode() for j in await redis.zrange(zip_admitted, 0, -1)]
    assert came_in == ["z16"]
    assert await redis.llen(wire.wait_list_key(TTS_MODEL, "zip", "interactive")) == 5
    decisions = []
    for job_id in came_in:
        try:
            await asker.acquire(TTS_MODEL, job_id=job_id, lane="interactive", tenant="zip")
            decisions.append("granted")
        except CapacityDeferred as exc:
            decisions.append(str(exc).split("(")[1].split(")")[0])
    assert "parked" not in decisions
