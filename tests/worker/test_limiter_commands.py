"""What each limiter decision costs Redis, pinned per decision (issue #22).

A job's life on a busy fleet is a few acquire decisions (a ticket, a ticket holder back
early, the grant of its slot) and one release; bench/redis_cost.py measures the mix, this
counts each decision alone with ``INFO commandstats`` (commands run inside the script
included, the EVALSHA itself too) on the test's Redis, against an injected clock (so
Redis TIME, one more command per decision in production, is not among them).

A change that makes a decision read something the script already knows fails here and
says by how much; lower a budget when a decision gets cheaper.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.core.dialect_constants import TTS_MODEL
from mimoq.core.errors import CapacityDeferred
from mimoq.worker.limiter import RedisLimiter
from mimoq.worker.limiter.config import LimiterConfig, limiter_keys
from tests.support.commandstats import command_calls

pytestmark = pytest.mark.redis

#: Half-second slots (20 requests per 10 s window at a target of 1): a job's life fits
#: between two of the limiter's housekeeping rounds (once a second), which are not a
#: decision's cost.
SLOTS = LimiterConfig(account="acct", window_s=10.0, default_rpm=20, target=1.0)
T0 = 1000.0
#: Commands per decision, measured (before issue #22's trims of the scripts, in brackets):
#: a bulk job queued for a slot 12 (17), the same job back early 6 (4), its slot's grant
#: 16 (23; 19 before the sweep of dead admissions moved to housekeeping), a release 4 (5).
#: The ticket's and the grant's SET of the job's cancel marker read it (GET): a GET of its
#: own on every ask was one more each.
#: A deferral sets the job's queue place at its slot itself (one ZADD, where arq's own
#: deferral would send a ZINCRBY), so that moving a ticket can move its job too; a place
#: that is already right costs a ZSCORE more (is the job queued at all?), as back early here.
#: A decision writes the state hash once, with its counters among the fields (end_call).
#: The budgets are the measurements: a decision's commands do not depend on load or timing.
BUDGET = {"queued": 12, "early": 6, "granted": 16, "release": 4}


async def _counted(redis: ArqRedis, call: Any) -> tuple[Any, int, Counter[str]]:
    await redis.config_resetstat()
    try:
        result = await call
    except CapacityDeferred as exc:
        result = exc
    counts = await command_calls(redis)
    return result, sum(counts.values()), counts


async def test_each_decision_of_a_queued_jobs_life_stays_within_its_commands(
    redis: ArqRedis,
) -> None:
    now = [T0]
    limiter = RedisLimiter(SLOTS, redis, clock=lambda: now[0])
    acquire = limiter.acquire
    # the first job takes the free slot (its decision loads the scripts and gives the
    # limiter's keys their TTL); the second queues for the next one
    first = await acquire(TTS_MODEL, job_id="first", lane="bulk", tenant="t-a")
    await limiter.release(first, usage=None, latency_s=0.4, lag_s=0.01)
    costs: dict[str, int] = {}
    await redis.zadd(wire.QUEUE_NAME, {"second": T0 * 1000})  # queued as arq queues it
    queued, costs["queued"], seen = await _counted(
        redis, acquire(TTS_MODEL, job_id="second", lane="bulk", tenant="t-a")
    )
    assert isinstance(queued, CapacityDeferred), seen
    now[0] = T0 + 0.25
    early, costs["early"], seen = await _counted(
        redis, acquire(TTS_MODEL, job_id="second", lane="bulk", tenant="t-a")
    )
    assert isinstance(early, CapacityDeferred), seen
    # its queue place follows its slot (T0 + 0.5 s), set by the deferral itself
    assert early.queued and await redis.zscore(wire.QUEUE_NAME, "second") == (T0 + 0.5) * 1000
    now[0] = T0 + 0.5
    lease, costs["granted"], seen = await _counted(
        redis, acquire(TTS_MODEL, job_id="second", lane="bulk", tenant="t-a")
    )
    assert not isinstance(lease, CapacityDeferred), seen
    _, costs["release"], seen = await _counted(
        redis, limiter.release(lease, usage=None, latency_s=0.4, lag_s=0.01)
    )
    over = {k: (v, BUDGET[k]) for k, v in costs.items() if v > BUDGET[k]}
    assert not over, f"decisions over their budget (count, budget): {over}; all: {costs}"


async def test_housekeeping_runs_once_a_tenth_of_the_window(redis: ArqRedis) -> None:
    """At MiMo's 60 s window a model's decisions come 0.6 s apart or more: housekeeping at
    most once a second ran on most of them, about 9 commands each (issue #22). It runs once
    a tenth of the window, 6 s, whatever the window."""
    config = LimiterConfig(account="acct", window_s=60.0, default_rpm=100)
    now = [T0]
    limiter = RedisLimiter(config, redis, clock=lambda: now[0])
    lease = await limiter.acquire(TTS_MODEL, job_id="j0", lane="bulk")  # the first sweeps
    await limiter.release(lease, usage=None, latency_s=0.4)
    swept = []
    for k, at in enumerate((2.0, 4.0, 6.5)):
        now[0] = T0 + at
        granted, _, seen = await _counted(
            redis, limiter.acquire(TTS_MODEL, job_id=f"j{k + 1}", lane="bulk")
        )
        assert not isinstance(granted, CapacityDeferred), seen
        swept.append(seen["zremrangebyscore"] > 0)
    assert swept == [False, False, True]


async def test_a_decision_writes_the_state_hash_once_its_counters_among_the_fields(
    redis: ArqRedis,
) -> None:
    """A grant that sweeps, refreshes the keys' TTLs and admits a batch writes the model's
    state with one HSET, the admission's count among its fields: a decision wrote it with an
    HSET for each of those and an HINCRBY a counter (issue #22). The counts are kept across
    decisions: each is read with the state."""
    now = [T0]
    limiter = RedisLimiter(SLOTS, redis, clock=lambda: now[0])
    waiting = wire.WAIT_PREFIX + TTS_MODEL + ":"
    for tenant, jobs in (("big", 6), ("small", 1)):
        await redis.rpush(waiting + "tenant:" + tenant, *[f"{tenant}{i}" for i in range(jobs)])
        await redis.rpush(waiting + "tenants", tenant)
        for i in range(jobs):
            await redis.set(f"arq:job:{tenant}{i}", b"{}")
    first = await limiter.acquire(TTS_MODEL, job_id="first", lane="bulk", tenant="big")
    await limiter.release(first, usage=None, latency_s=0.4, lag_s=0.01)
    admitted_first = (await limiter.snapshot(TTS_MODEL)).lanes["admitted_total"]
    await redis.delete(wire.admitted_key(TTS_MODEL))  # the look-ahead granted: room again
    now[0] = T0 + 61.0  # past housekeeping's and a touch's intervals (1 s, 60 s)
    granted, _, seen = await _counted(
        redis, limiter.acquire(TTS_MODEL, job_id="second", lane="bulk", tenant="small")
    )
    assert not isinstance(granted, CapacityDeferred), seen
    assert seen["zremrangebyscore"] > 0 and seen["expire"] > 0 and seen["zadd"] > 0, seen
    # one HSET each: the state, the new tickets' tenants, and their tenants' ticket counts
    # (before: the state's four, for the sweep, the TTLs, the grant and the batch's slots);
    # one HINCRBY: the grant's count of its lane and tenant (the admission's was another)
    assert seen["hset"] == 3 and seen["hincrby"] == 1, seen
    state = await redis.hgetall(limiter_keys("acct", TTS_MODEL)[0])
    assert {b"hk", b"touched", b"tat", b"ptat", b"c:admitted"} <= set(state)
    lanes = (await limiter.snapshot(TTS_MODEL)).lanes
    assert lanes["tenant_grants"] == {"big": 1, "small": 1}
    assert lanes["admitted_total"] > admitted_first > 0
