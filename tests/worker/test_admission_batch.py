"""An admission gives its jobs their tickets as one batch (core/scripts/limiter_common.lua
ticket_batch, write_tickets, still_queued; issue #22): one ZADD of the lane, one HSET of the
tickets' tenants and one of the tenants' counts for the whole batch, and one EXISTS for the
jobs' arq records, where each admitted job cost four commands of its own. What the batch
writes must be what the job-by-job writes were: each ticket counted once for its tenant,
each tenant's latest ticket right, a job whose record expired left out. Real Redis, the real
scripts, an injected clock."""

from __future__ import annotations

import random
import time

import pytest
from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.core.dialect_constants import TTS_MODEL
from tests.support.commandstats import command_calls
from tests.support.limiter_tickets import schedule
from tests.worker.test_admit_slots import (
    _free_places,
    _interactive,
    _keys,
    _limiter,
    _queue_score,
    _waiting_bulk,
)
from tests.worker.test_limiter import SECONDS, T0

pytestmark = pytest.mark.redis

#: Commands of one admission round (``admit``) giving 12 bulk jobs of 2 tenants their
#: tickets: the round's reads, then per job a turn of the ring, its pop, its list's length
#: and its cancel marker, and the batch's writes once. Measured: 68, where the job-by-job
#: writes cost 112 (each job's EXISTS, ticket ZADD, tenant HSET and count HSET).
BULK_ROUND_BUDGET = 68
#: The same round for 4 interactive jobs of one tenant: measured 35, job by job 57 (each
#: job's lane sizes read again too).
INTERACTIVE_ROUND_BUDGET = 35


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


async def test_rounds_of_floods_and_turns_keep_every_ticket_counted_once_where_it_is(
    redis: ArqRedis,
) -> None:
    """Tenants of very different sizes arrive over several rounds, so that admissions take
    turns (a ticket moved to the schedule's end, the batch's own among them) between the
    batch's writes: after each round, every ticket is known with its tenant, each tenant's
    count and latest ticket are its tickets', and each job is queued hold before its slot."""
    rng = random.Random(7)
    limiter, _ = await _limiter(redis, lookahead_s=40.0)
    keys = _keys(TTS_MODEL)
    await _waiting_bulk(redis, TTS_MODEL, [("lead", "big")])
    sizes = {"big": 9, "mid": 3, "small": 1, "tiny": 1}
    n = 0
    for _ in range(6):
        arrivals = [(t, i) for t, k in sizes.items() for i in range(rng.randint(0, k))]
        rng.shuffle(arrivals)
        await _waiting_bulk(
            redis, TTS_MODEL, [(f"{t}-{n + i}", t) for i, (t, _) in enumerate(arrivals)]
        )
        n += len(arrivals)
        admitted = [j.decode() for j in await redis.zrange(wire.admitted_key(TTS_MODEL), 0, -1)]
        freed = rng.sample(admitted, len(admitted) // 3)
        if freed:  # some places free, as grants would free them
            await redis.zrem(wire.admitted_key(TTS_MODEL), *freed)
        await limiter.admit(TTS_MODEL)
        tickets = {j.decode(): at for j, at in await schedule(redis, "acct", TTS_MODEL)}
        owners = await _tenants_of_tickets(redis)
        assert set(owners) == set(tickets)
        counts = await _tenant_counts(redis)
        for field in {f for f in owners.values()}:
            mine = [at for job, at in tickets.items() if owners[job] == field]
            assert int(counts[field]) == len(mine), field
            assert float(counts[f"last:{field}"]) == max(mine), field
        for job, at in tickets.items():
            assert await redis.zscore(wire.QUEUE_NAME, job) == _queue_score(at), job
    assert int(await redis.hget(keys["state"], "c:turns")) > 0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("before", "mids", "smalls", "expected"),
    [
        # mid0 gets the end (T0 + 2); small0, whose tenant holds none while mid holds two,
        # takes the second mid ticket, mid0's, written by the batch only at its end
        (1, 2, 1, "mid-0 small0 mid0 mid1"),
        # each small job reads the lane with the batch's earlier tickets in it: small2 takes
        # mid-1's slot (T0 + 6), the second after its tenant's latest (small1's) with mid0's
        # in between, and mid-1 moves to the end
        (3, 4, 3, "mid-0 small0 mid-2 small1 mid0 small2 mid1 mid-1 mid2 mid3"),
    ],
)
async def test_a_batch_takes_the_turns_its_jobs_would_take_one_by_one(
    redis: ArqRedis, before: int, mids: int, smalls: int, expected: str
) -> None:
    """Tenants' turns within one batch see the batch's own tickets, as when each was written
    on its own. (The job-by-job writes gave these same schedules: this test passes on the
    code before, 14d2b83; the first fails without their tenants known before they are
    written, the second without the tickets placed before a turn's read.)"""
    limiter, _ = await _limiter(redis, lookahead_s=40.0)
    await _waiting_bulk(redis, TTS_MODEL, [("lead", "mid")])
    await _waiting_bulk(redis, TTS_MODEL, [(f"mid-{i}", "mid") for i in range(before)])
    await limiter.admit(TTS_MODEL)  # mid holds `before` tickets from T0 + 1
    small = [(f"small{i}", "small") for i in range(smalls)]
    mid = [(f"mid{i}", "mid") for i in range(mids)]
    await _waiting_bulk(redis, TTS_MODEL, small + mid if before == 1 else mid + small)
    await limiter.admit(TTS_MODEL)
    tickets = [(j.decode(), at) for j, at in await schedule(redis, "acct", TTS_MODEL)]
    assert tickets == [(job, T0 + 1 + k) for k, job in enumerate(expected.split())]


async def test_a_turn_at_admission_looks_past_a_third_tenants_ticket(redis: ArqRedis) -> None:
    """mid holds four tickets and solo took the second slot by its turn. small's turn is
    mid's next ticket, not the end: the lane's second ticket (solo's) belongs to a tenant
    holding too few to give one. Looking at that ticket only, small0 queued behind all of
    mid's (fails on 3e67a6a)."""
    limiter, _ = await _limiter(redis, lookahead_s=40.0)
    await _waiting_bulk(redis, TTS_MODEL, [("lead", "mid")])
    await _waiting_bulk(redis, TTS_MODEL, [(f"mid-{i}", "mid") for i in range(4)])
    await limiter.admit(TTS_MODEL)  # mid holds T0 + 1 to T0 + 4
    await _waiting_bulk(redis, TTS_MODEL, [("solo0", "solo")])
    await limiter.admit(TTS_MODEL)  # solo0 takes mid-1's slot; mid-1 moves to the end
    await _waiting_bulk(redis, TTS_MODEL, [("small0", "small")])
    await limiter.admit(TTS_MODEL)
    tickets = [(j.decode(), at) for j, at in await schedule(redis, "acct", TTS_MODEL)]
    expected = ["mid-0", "solo0", "small0", "mid-3", "mid-1", "mid-2"]
    assert tickets == [(job, T0 + 1 + k) for k, job in enumerate(expected)]
    assert int((await _tenant_counts(redis))["bulk:mid"]) == 4


async def test_interactive_places_of_jobs_never_granted_are_swept_when_a_job_waits(
    redis: ArqRedis,
) -> None:
    """A tenant's admitted interactive jobs whose workers died before their grants stop
    holding its places after two windows: the round that looks at its waiting job sweeps
    them and admits it. (Swept only where the count is read: a grant with no job waiting
    no longer sweeps.)"""
    limiter, clock = await _limiter(redis, busy=False)
    ids = await _interactive(redis, TTS_MODEL, "acme", wire.INTERACTIVE_DIRECT + 1)
    admitted = wire.interactive_admitted_key(TTS_MODEL, "acme")
    assert await redis.zcard(admitted) == wire.INTERACTIVE_DIRECT  # the direct ones
    assert await limiter.admit(TTS_MODEL) == 0  # its places are all held
    # (the places are scored on Redis TIME; the limiter's clock moves past their lifetime)
    clock.now = time.time() + 3 * SECONDS.window_s
    assert await limiter.admit(TTS_MODEL) == 1
    assert await redis.zrange(admitted, 0, -1) == [ids[-1].encode()]
