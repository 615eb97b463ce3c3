"""An admission gives its jobs their tickets as one batch (core/scripts/limiter_common.lua
ticket_batch, write_tickets, still_queued; issue #22): one ZADD of the lane, one HSET of the
tickets' tenants and one of the tenants' counts for the whole batch, and one EXISTS for the
jobs' arq records, where each admitted job cost four commands of its own. What the batch
writes must be what the job-by-job writes were: each ticket counted once for its tenant,
each tenant's latest ticket right, a job whose record expired left out. Real Redis, the real
scripts, an injected clock."""

from __future__ import annotations

import pytest
from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.core.dialect_constants import TTS_MODEL
from tests.support.commandstats import command_calls
from tests.support.limiter_tickets import schedule
from tests.worker.test_admit_slots import _free_places, _interactive, _keys, _limiter, _waiting_bulk
from tests.worker.test_limiter import T0

pytestmark = pytest.mark.redis

#: Commands of one admission round (``admit``) giving 12 bulk jobs of 2 tenants their
#: tickets: the round's reads, then per job a turn of the ring, its pop, its list's length
#: and its cancel marker, and the batch's writes once. Measured: 69, where the job-by-job
#: writes cost 112 (each job's EXISTS, ticket ZADD, tenant HSET and count HSET).
BULK_ROUND_BUDGET = 69
#: The same round for 4 interactive jobs of one tenant: measured 36, job by job 57 (each
#: job's lane sizes read again too).
INTERACTIVE_ROUND_BUDGET = 36


async def _tenant_counts(redis: ArqRedis) -> dict[str, str]:
    raw = await redis.hgetall(_keys(TTS_MODEL)["tenant_tickets"])  # type: ignore[misc]
    return {k.decode(): v.decode() for k, v in raw.items()}


async def _tenants_of_tickets(redis: ArqRedis) -> dict[str, str]:
    raw = await redis.hgetall(_keys(TTS_MODEL)["ticket_tenant"])  # type: ignore[misc]
    return {k.decode(): v.decode() for k, v in raw.items()}


async def test_a_bulk_batch_writes_each_ticket_its_tenant_and_the_tenants_counts(
    redis: ArqRedis,
) -> None:
    limiter, _ = await _limiter(redis, lookahead_s=20.0)  # the schedule ends at T0 + 1
    await _waiting_bulk(redis, TTS_MODEL, [("lead", "acme")])  # admitted by its enqueue
    jobs = [(f"{t}{i}", t) for i in range(6) for t in ("acme", "bolt")]
    await _waiting_bulk(redis, TTS_MODEL, jobs)
    await redis.config_resetstat()
    assert await limiter.admit(TTS_MODEL) == 12
    commands = sum((await command_calls(redis)).values())
    tickets = [(j.decode(), at) for j, at in await schedule(redis, "acct", TTS_MODEL)]
    # a slot apart from the schedule's end, the tenants in turn, each one's jobs in order
    assert [at for _, at in tickets] == [T0 + 1 + k for k in range(12)]
    order = [job for job, _ in tickets]
    assert {order[0][:4], order[1][:4]} == {"acme", "bolt"}
    assert order == [f"{order[k % 2][:4]}{k // 2}" for k in range(12)]
    assert await _tenants_of_tickets(redis) == {job: f"bulk:{t}" for job, t in jobs}
    counts = await _tenant_counts(redis)
    assert int(counts["bulk:acme"]) == 6 and int(counts["bulk:bolt"]) == 6
    for tenant in ("acme", "bolt"):
        latest = max(at for job, at in tickets if job.startswith(tenant))
        assert float(counts[f"last:bulk:{tenant}"]) == latest
    assert commands <= BULK_ROUND_BUDGET, f"{commands} commands for 12 jobs"


async def test_a_job_whose_record_expired_while_it_waited_is_left_out_of_the_batch(
    redis: ArqRedis,
) -> None:
    limiter, _ = await _limiter(redis, lookahead_s=20.0)
    await _waiting_bulk(redis, TTS_MODEL, [("lead", "acme")])
    await _waiting_bulk(redis, TTS_MODEL, [(f"a{i}", "acme") for i in range(4)])
    await redis.delete("arq:job:a1")  # its record expired in its list
    assert await limiter.admit(TTS_MODEL) == 3
    tickets = [(j.decode(), at) for j, at in await schedule(redis, "acct", TTS_MODEL)]
    assert tickets == [("a0", T0 + 1), ("a2", T0 + 2), ("a3", T0 + 3)]
    assert await redis.zscore(wire.QUEUE_NAME, "a1") is None
    assert await redis.zscore(wire.admitted_key(TTS_MODEL), "a1") is None
    counts = await _tenant_counts(redis)
    assert int(counts["bulk:acme"]) == 3 and float(counts["last:bulk:acme"]) == T0 + 3


async def test_a_batch_job_that_holds_a_ticket_already_is_moved_not_counted_twice(
    redis: ArqRedis,
) -> None:
    """None should (a job gets its ticket with its first cancel marker), but a count that
    took it twice would hold its tenant's turns off for good. (The job-by-job writes did:
    the ticket was moved, not counted, and the next one's count was written one too high.)"""
    limiter, _ = await _limiter(redis, lookahead_s=20.0)
    keys = _keys(TTS_MODEL)
    await _waiting_bulk(redis, TTS_MODEL, [("lead", "acme")])
    await _waiting_bulk(redis, TTS_MODEL, [(f"a{i}", "acme") for i in range(3)])
    await redis.zadd(keys["bulk_tickets"], {"a1": T0 + 50})
    await redis.hset(keys["ticket_tenant"], "a1", "bulk:acme")  # type: ignore[misc]
    await redis.hset(keys["tenant_tickets"], "bulk:acme", 1)  # type: ignore[misc]
    assert await limiter.admit(TTS_MODEL) == 3
    tickets = [(j.decode(), at) for j, at in await schedule(redis, "acct", TTS_MODEL)]
    assert tickets == [("a0", T0 + 1), ("a1", T0 + 2), ("a2", T0 + 3)]
    assert int((await _tenant_counts(redis))["bulk:acme"]) == 3


async def test_an_interactive_batch_writes_its_tickets_and_its_tenants_count_once(
    redis: ArqRedis,
) -> None:
    limiter, _ = await _limiter(redis)  # the schedule ends at T0 + 1
    ids = await _interactive(redis, TTS_MODEL, "acme", wire.INTERACTIVE_DIRECT + 4)
    await _free_places(redis, TTS_MODEL, "acme", ids[:4])
    await redis.config_resetstat()
    assert await limiter.admit(TTS_MODEL) == 4
    commands = sum((await command_calls(redis)).values())
    waiting = ids[-4:]
    tickets = [(j.decode(), at) for j, at in await schedule(redis, "acct", TTS_MODEL)]
    assert tickets == [(job, T0 + 1 + k) for k, job in enumerate(waiting)]
    assert await _tenants_of_tickets(redis) == dict.fromkeys(waiting, "interactive:acme")
    counts = await _tenant_counts(redis)
    assert int(counts["interactive:acme"]) == 4
    assert float(counts["last:interactive:acme"]) == T0 + 4
    assert commands <= INTERACTIVE_ROUND_BUDGET, f"{commands} commands for 4 jobs"
