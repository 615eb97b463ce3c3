"""Admitted bulk jobs get their slots as they are admitted, and their queue places follow
their slots (core/scripts/limiter_common.lua slot_plan, queue_score; issue #22): a bulk
job's first pick is near its slot, never a pick that only learns it and defers again.
Real Redis, the real scripts, an injected clock."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace
from typing import Any

import pytest
from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.core.dialect_constants import ASR_MODEL, TTS_MODEL
from mimoq.core.errors import CapacityDeferred
from mimoq.worker.limiter import RedisLimiter
from mimoq.worker.limiter.config import KEY_PARTS, limiter_keys
from mimoq.worker.limiter.core import MAX_HOLDS, QUEUED_TICKET
from tests.support.limiter_tickets import schedule, slot_of
from tests.worker.test_limiter import SECONDS, T0, Clock

pytestmark = pytest.mark.redis

HOLD = SECONDS.hold_s


def _queue_score(at: float) -> int:
    return math.ceil((at - HOLD) * 1000)


def _keys(model: str) -> dict[str, str]:
    return dict(zip(KEY_PARTS, limiter_keys("acct", model), strict=True))


async def _waiting_bulk(redis: ArqRedis, model: str, jobs: list[tuple[str, str]]) -> None:
    enqueue = redis.register_script(wire.enqueue_script())
    for job_id, tenant in jobs:
        job: dict[str, Any] = {
            "kind": "speech" if model == TTS_MODEL else "transcription",
            "model": model, "input": "hi", "tenant": tenant, "priority": "bulk",
        }  # fmt: skip
        if model == ASR_MODEL:
            job = {**job, "input": "https://example.com/a.wav"}
        assert await enqueue(keys=wire.enqueue_keys(job_id), args=[job_id, json.dumps(job)])


async def _limiter(
    redis: ArqRedis,
    model: str = TTS_MODEL,
    *,
    busy: bool = True,
    busy_audio_s: float | None = 4.0,
    **changes: Any,
) -> tuple[RedisLimiter, Clock]:
    """A limiter on one-second slots; ``busy``: a call of ``model`` was just granted, so its
    schedule ends a slot from now (an idle schedule admits without slots: see below), with
    ``busy_audio_s`` of audio (None: unknown, so not the model's typical audio)."""
    clock = Clock()
    limiter = RedisLimiter(replace(SECONDS, **changes), redis, clock=clock, sleep=clock.sleep)
    if busy:
        await limiter.acquire(model, job_id=f"busy-{model}", audio_s=busy_audio_s)
    return limiter, clock


async def test_admitted_bulk_jobs_hold_their_slots_and_are_queued_hold_before_them(
    redis: ArqRedis,
) -> None:
    limiter, clock = await _limiter(redis, lookahead_s=5.0)
    # (the first job of an idle model is admitted by the enqueue itself, due at once)
    jobs = [("lead", "acme")] + [(f"{t}{i}", t) for i in range(3) for t in ("acme", "bolt")]
    await _waiting_bulk(redis, TTS_MODEL, jobs)
    admitted = await limiter.admit(TTS_MODEL)
    assert admitted == 4
    keys = _keys(TTS_MODEL)
    tickets = await schedule(redis, "acct", TTS_MODEL)
    assert len(tickets) == admitted
    # one slot after another from now, in admission order (the tenants' round robin)
    assert [at for _, at in tickets] == [T0 + 1 + i for i in range(admitted)]
    owners = [j.decode()[:4] for j, _ in tickets]
    assert all(a != b for a, b in itertools.pairwise(owners)), owners
    for job, at in tickets:
        score = await redis.zscore(wire.QUEUE_NAME, job)
        assert score == _queue_score(at), job
        marker = await redis.get(wire.cancel_key(job.decode()))
        assert marker is not None and marker.startswith(b"ticket ")
    counts = await redis.hgetall(keys["tenant_tickets"])  # type: ignore[misc]
    assert int(counts[b"bulk:acme"]) + int(counts[b"bulk:bolt"]) == admitted

    # each job, taken when its queue place is due, is granted its slot at its first ask
    for job, at in tickets:
        clock.now = (await redis.zscore(wire.QUEUE_NAME, job) or 0) / 1000
        lease = await limiter.acquire(
            TTS_MODEL, job_id=job.decode(), lane="bulk", tenant=job.decode()[:4]
        )
        assert lease.granted_at == at
        assert len(clock.sleeps) <= admitted  # at most the one hold before its slot


async def test_a_cancelled_waiting_job_gets_no_slot(redis: ArqRedis) -> None:
    limiter, _ = await _limiter(redis, lookahead_s=5.0)
    await _waiting_bulk(redis, TTS_MODEL, [("lead", "acme"), ("gone", "acme"), ("kept", "acme")])
    await redis.set(wire.cancel_key("gone"), "cancelled")  # a cancel came first
    await limiter.admit(TTS_MODEL)
    tickets = await schedule(redis, "acct", TTS_MODEL)
    assert tickets == [(b"kept", T0 + 1)]
    assert await redis.get(wire.cancel_key("gone")) == b"cancelled"
    # still due at once: its worker records the cancel
    assert await redis.zscore(wire.QUEUE_NAME, "gone") == T0 * 1000


@pytest.mark.parametrize("why", ["token_limited_model", "several_accounts"])
async def test_without_a_known_slot_admitted_jobs_are_due_at_once(
    redis: ArqRedis, why: str
) -> None:
    """A token-limited model's slot depends on the job's audio, unknown before the model's
    first grant of a measured length; a pool of several accounts chooses the account when
    the job asks: those jobs ask for their slots."""
    model = ASR_MODEL if why == "token_limited_model" else TTS_MODEL
    limiter, _ = await _limiter(
        redis, model, busy_audio_s=None, admit_slots=why != "several_accounts"
    )
    await _waiting_bulk(redis, model, [("lead", "acme"), ("a0", "acme"), ("a1", "acme")])
    assert await limiter.admit(model) == 1  # (the look-ahead: 2 jobs, with the lead)
    assert not await schedule(redis, "acct", model)
    assert await redis.zscore(wire.QUEUE_NAME, "a0") == T0 * 1000


async def test_a_token_limited_models_jobs_get_slots_sized_on_its_typical_audio(
    redis: ArqRedis,
) -> None:
    """Once a transcription of a measured length was granted, admitted jobs get slots sized
    on the model's typical audio (its granted calls' EWMA), each ticket noting that audio;
    a job's grant settles its own length: the schedule's end moves by the difference, and
    the typical audio follows it. Before, these jobs were due at once and their first
    pick only learned their slots (issue #22)."""
    # 1000 tokens a 10 s window: 0.01 s a token; 20 s of audio is 21 + 11.25 x 20 = 246
    # tokens, a 2.46 s slot (longer than a request's 1 s)
    limiter, clock = await _limiter(
        redis, ASR_MODEL, busy_audio_s=20.0, tpm={ASR_MODEL: 1000}, lookahead_s=10.0
    )
    keys = _keys(ASR_MODEL)
    assert float(await redis.hget(keys["state"], "audio") or 0) == 20.0  # type: ignore[misc]
    await _waiting_bulk(
        redis, ASR_MODEL, [("lead", "acme")] + [(f"a{i}", "acme") for i in range(3)]
    )
    assert await limiter.admit(ASR_MODEL) == 3
    tickets = await schedule(redis, "acct", ASR_MODEL)
    assert [job for job, _ in tickets] == [b"a0", b"a1", b"a2"]
    assert [at for _, at in tickets] == pytest.approx([T0 + 2.46 * k for k in (1, 2, 3)])
    for job, at in tickets:
        assert await redis.zscore(wire.QUEUE_NAME, job) == _queue_score(at)
        assert float(await redis.hget(keys["ticket_audio"], job) or 0) == 20.0  # type: ignore[misc]
    end = float(await redis.hget(keys["state"], "tat") or 0)  # type: ignore[misc]
    assert end == pytest.approx(T0 + 2.46 * 4)

    # a0's audio is 30 s (359 tokens, 3.59 s): granted at its slot at its first ask, and the
    # schedule's end moves out by the 1.13 s its slot was short
    clock.now = tickets[0][1]
    lease = await limiter.acquire(ASR_MODEL, job_id="a0", audio_s=30.0, lane="bulk", tenant="acme")
    assert lease.granted_at == pytest.approx(tickets[0][1]) and lease.tokens == 359
    moved = float(await redis.hget(keys["state"], "tat") or 0)  # type: ignore[misc]
    assert moved == pytest.approx(end + 3.59 - 2.46)
    assert float(await redis.hget(keys["state"], "audio") or 0) == pytest.approx(22.0)  # type: ignore[misc]
    # a1's is 2 s (44 tokens): its slot was long. The model is token-bound (its typical call
    # takes longer than a request's 1 s slot), so a1 takes its 0.44 s of token time: the
    # credit moves the end in by 2.02 s, never in front of the slot after the last ticket
    clock.now = tickets[1][1]
    await limiter.acquire(ASR_MODEL, job_id="a1", audio_s=2.0, lane="bulk", tenant="acme")
    credited = float(await redis.hget(keys["state"], "tat") or 0)  # type: ignore[misc]
    assert credited == pytest.approx(max(moved + 0.44 - 2.46, tickets[2][1] + 1.0))


async def test_a_token_limited_model_admits_two_until_it_knows_its_typical_audio(
    redis: ArqRedis,
) -> None:
    """Before its first grant of a known length, a transcription's slot cannot be planned,
    and a whole look-ahead of unplanned jobs would be picked at once, most only to learn
    their slots: two are kept admitted until then, the whole look-ahead after."""
    limiter, clock = await _limiter(
        redis, ASR_MODEL, busy_audio_s=None, tpm={ASR_MODEL: 1000}, lookahead_s=10.0
    )
    jobs = [("lead", "acme")] + [(f"a{i}", "acme") for i in range(6)]
    await _waiting_bulk(redis, ASR_MODEL, jobs)
    assert await limiter.admit(ASR_MODEL) == 1  # the lead (enqueued at once) and a0
    assert not await schedule(redis, "acct", ASR_MODEL)
    # a0, 20 s of audio: granted once the unknown-length busy call's 6.96 s slot is over
    # (charged as 60 s: 696 tokens), and now the model's typical audio
    clock.now = T0 + 7
    await limiter.acquire(ASR_MODEL, job_id="a0", audio_s=20.0, lane="bulk", tenant="acme")
    # its grant topped the look-ahead up, with slots sized on that audio (2.46 s each)
    tickets = await schedule(redis, "acct", ASR_MODEL)
    assert [job for job, _ in tickets] == [b"a1", b"a2", b"a3", b"a4", b"a5"]
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(tickets)]
    assert gaps == pytest.approx([2.46] * 4)


async def test_an_idle_schedule_admits_without_slots(redis: ArqRedis) -> None:
    """Nobody waits for a slot: an admitted job's first ask is its grant anyway, so it gets
    no ticket (a quota far from binding would pay its writes on every job for nothing)."""
    # the look-ahead's room is one job ("lead" went straight to the queue): its slot is now
    limiter, _ = await _limiter(redis, busy=False, lookahead_s=1.0)
    await _waiting_bulk(redis, TTS_MODEL, [("lead", "acme"), ("a0", "acme"), ("a1", "bolt")])
    assert await limiter.admit(TTS_MODEL) == 1
    assert not await schedule(redis, "acct", TTS_MODEL)
    # the tenants' round robin admits bolt's job first
    assert await redis.zscore(wire.QUEUE_NAME, "a1") == T0 * 1000
    assert await redis.get(wire.cancel_key("a1")) is None


async def test_a_batch_reaching_past_the_hold_gets_slots_on_an_idle_schedule(
    redis: ArqRedis,
) -> None:
    """A batch admitted while the schedule is idle still has its later jobs wait: without
    slots, all of them entered the queue at once and each one's first ask took a ticket
    behind the others' and went round arq's queue again."""
    limiter, _ = await _limiter(redis, busy=False, lookahead_s=5.0)
    await _waiting_bulk(redis, TTS_MODEL, [("lead", "acme"), ("a0", "acme"), ("a1", "bolt")])
    assert await limiter.admit(TTS_MODEL) == 2
    # in the tenants' round robin: bolt's job first, then acme's, a slot later
    tickets = {job.decode(): at for job, at in await schedule(redis, "acct", TTS_MODEL)}
    assert tickets == {"a1": pytest.approx(T0), "a0": pytest.approx(T0 + 1.0)}
    assert await redis.zscore(wire.QUEUE_NAME, "a0") == _queue_score(T0 + 1.0)


async def test_a_moved_ticket_moves_its_jobs_queue_place(redis: ArqRedis) -> None:
    """A 429 re-spaces the queue behind the pause at the lower rate: every ticket holder's
    queue place moves with its ticket, so none is taken early only to be deferred."""
    limiter, clock = await _limiter(redis, lookahead_s=5.0)
    await _waiting_bulk(redis, TTS_MODEL, [(f"b{i}", "acme") for i in range(6)])
    assert await limiter.admit(TTS_MODEL) == 4
    await limiter.rate_limited(TTS_MODEL, retry_after_s=5.0)
    tickets = await schedule(redis, "acct", TTS_MODEL)
    assert tickets and all(at >= T0 + 5.0 for _, at in tickets)
    for job, at in tickets:
        assert await redis.zscore(wire.QUEUE_NAME, job) == _queue_score(at)
    # a job taken at its place (hold before its slot) is granted after the hold
    job, at = tickets[0]
    clock.now = at - HOLD
    lease = await limiter.acquire(TTS_MODEL, job_id=job.decode(), lane="bulk", tenant="acme")
    assert lease.granted_at == at and clock.sleeps == [HOLD]


async def test_a_deferral_sets_the_jobs_queue_place_at_its_slot(redis: ArqRedis) -> None:
    """A job deferred for its slot is put hold before it by the decision itself (and the
    worker leaves it there: arq_compat.retry_where_queued)."""
    limiter, clock = await _limiter(redis)  # a call granted at T0
    await redis.zadd(wire.QUEUE_NAME, {"late": T0 * 1000})
    with pytest.raises(CapacityDeferred) as deferral:
        await limiter.acquire(TTS_MODEL, job_id="late", tenant="acme")
    assert deferral.value.queued
    ticket = await slot_of(redis, "acct", TTS_MODEL, "late")
    assert ticket is not None and ticket - T0 > HOLD
    assert await redis.zscore(wire.QUEUE_NAME, "late") == _queue_score(ticket)
    # a job outside arq's queue is left to its worker's own deferral
    with pytest.raises(CapacityDeferred) as outside:
        await limiter.acquire(TTS_MODEL, job_id="nowhere", tenant="acme")
    assert not outside.value.queued
    assert await redis.zscore(wire.QUEUE_NAME, "nowhere") is None
    assert clock.sleeps == []


async def test_a_tenant_admitted_behind_a_flood_takes_its_turns(redis: ArqRedis) -> None:
    """Tenants' turns hold at admission as they do at a first ask: a tenant whose first job
    is admitted behind another's look-ahead takes that tenant's second slot (the displaced
    job moves to the schedule's end, its queue place with it), not the end."""
    limiter, _ = await _limiter(redis, lookahead_s=6.0)
    keys = _keys(TTS_MODEL)
    await _waiting_bulk(redis, TTS_MODEL, [("lead", "big")])  # admitted at once
    await _waiting_bulk(redis, TTS_MODEL, [(f"big{i}", "big") for i in range(8)])
    await limiter.admit(TTS_MODEL)
    big = await schedule(redis, "acct", TTS_MODEL)
    assert [j for j, _ in big] == [f"big{i}".encode() for i in range(5)]
    await _waiting_bulk(redis, TTS_MODEL, [("small0", "small"), ("small1", "small")])
    await redis.zrem(wire.admitted_key(TTS_MODEL), "big0", "big1")  # two places freed
    await limiter.admit(TTS_MODEL)
    tickets = dict(await schedule(redis, "acct", TTS_MODEL))
    # small0 took big's second slot after its own (none): big1's; big1 moved to the end
    assert tickets[b"small0"] == T0 + 2
    assert tickets[b"big1"] > tickets[b"big4"]
    assert await redis.zscore(wire.QUEUE_NAME, "big1") == _queue_score(tickets[b"big1"])
    assert await redis.zscore(wire.QUEUE_NAME, "small0") == _queue_score(T0 + 2)
    assert int(await redis.hget(keys["state"], "c:turns")) >= 1  # type: ignore[misc]


async def test_a_near_slot_is_queued_at_a_place_already_past_and_asked_once(
    redis: ArqRedis,
) -> None:
    """A job whose slot is less than hold_s away (the first of a batch admitted as the
    schedule's end nears) is queued hold_s before it all the same, a place already past: due
    at once, and its worker reads its slot back from it (QUEUED_TICKET), waits for it, and
    is granted at its first ask. A place clamped to now would have sent it to ask up to
    hold_s after its slot."""
    limiter, clock = await _limiter(redis, lookahead_s=6.0)
    await _waiting_bulk(redis, TTS_MODEL, [("lead", "acme"), ("near", "acme"), ("next", "acme")])
    clock.now = T0 + 0.9  # the schedule ends at T0 + 1, 0.1 s away
    await limiter.admit(TTS_MODEL)
    assert await slot_of(redis, "acct", TTS_MODEL, "near") == T0 + 1
    place = await redis.zscore(wire.QUEUE_NAME, "near")
    assert place == _queue_score(T0 + 1) and place < clock.now * 1000
    # taken at once; its acquire waits 0.1 s, then asks once and is granted its slot
    clock.sleeps.clear()
    await redis.config_resetstat()
    QUEUED_TICKET.set(place / 1000)
    lease = await limiter.acquire(TTS_MODEL, job_id="near", lane="bulk", tenant="acme")
    assert lease.granted_at == T0 + 1
    assert clock.sleeps == pytest.approx([0.1], abs=0.002)
    assert (await redis.info("commandstats"))["cmdstat_fcall"]["calls"] == 1


async def test_a_tenants_turn_never_takes_a_slot_within_the_hold(redis: ArqRedis) -> None:
    """A ticket less than hold_s away is its job's already: the job entered arq's queue
    hold_s before it and is waiting in a worker. A turn that moved it sent that holder to
    ask at its old slot, learn its new one, and go round arq's queue again; the turn takes
    a slot past the hold instead (the second one there, as after a tenant's own latest)."""
    limiter, clock = await _limiter(redis, lookahead_s=6.0)
    await _waiting_bulk(redis, TTS_MODEL, [("lead", "big")])
    await _waiting_bulk(redis, TTS_MODEL, [(f"big{i}", "big") for i in range(8)])
    await limiter.admit(TTS_MODEL)
    await _waiting_bulk(redis, TTS_MODEL, [("small0", "small")])
    await redis.zrem(wire.admitted_key(TTS_MODEL), "big0")
    clock.now = T0 + 1.9  # big1's slot at T0 + 2 is 0.1 s away: its holder is waiting
    await limiter.admit(TTS_MODEL)
    tickets = dict(await schedule(redis, "acct", TTS_MODEL))
    assert tickets[b"big1"] == T0 + 2 and tickets[b"big2"] == T0 + 3
    assert tickets[b"small0"] == T0 + 4  # big3's slot; big3 moved to the end
    assert tickets[b"big3"] > tickets[b"big4"]
    assert int(await redis.hget(_keys(TTS_MODEL)["state"], "c:turns")) == 1  # type: ignore[misc]


async def test_an_asks_turn_in_the_bulk_lane_never_takes_a_slot_within_the_hold(
    redis: ArqRedis,
) -> None:
    """The same for a job that takes its ticket at its ask: its turn takes big3's slot, the
    second past the hold, and big1's holder (0.1 s from its slot) keeps it."""
    limiter, clock = await _limiter(redis, lookahead_s=6.0)
    await _waiting_bulk(redis, TTS_MODEL, [("lead", "big")])
    await _waiting_bulk(redis, TTS_MODEL, [(f"big{i}", "big") for i in range(8)])
    await limiter.admit(TTS_MODEL)
    clock.now = T0 + 1.9
    with pytest.raises(CapacityDeferred):
        await limiter.acquire(TTS_MODEL, job_id="small0", lane="bulk", tenant="small")
    tickets = dict(await schedule(redis, "acct", TTS_MODEL))
    assert tickets[b"big1"] == T0 + 2 and tickets[b"big2"] == T0 + 3
    assert tickets[b"small0"] == T0 + 4
    assert tickets[b"big3"] > tickets[b"big4"]


async def test_a_holder_that_comes_back_queues_hold_before_its_time_to_ask(
    redis: ArqRedis,
) -> None:
    """Every deferral of a job holding a ticket puts its place hold_s before the time it is
    to ask: after MAX_HOLDS waits that the slot kept escaping too (a place already past)."""
    limiter, clock = await _limiter(redis)
    await redis.zadd(wire.QUEUE_NAME, {"held": T0 * 1000})
    with pytest.raises(CapacityDeferred):
        await limiter.acquire(TTS_MODEL, job_id="held", tenant="acme")
    slot = await slot_of(redis, "acct", TTS_MODEL, "held")
    assert slot is not None
    clock.now, clock.moves = slot - 0.2, 0.5  # each wait here moves the clock half-way
    with pytest.raises(CapacityDeferred) as escaping:
        await limiter.acquire(TTS_MODEL, job_id="held", tenant="acme")
    assert escaping.value.queued and len(clock.sleeps) == MAX_HOLDS
    assert await redis.zscore(wire.QUEUE_NAME, "held") == _queue_score(slot)


async def _interactive(redis: ArqRedis, model: str, tenant: str, n: int) -> list[str]:
    """Enqueue ``n`` interactive jobs of ``tenant``: the first INTERACTIVE_DIRECT go straight
    to arq's queue (enqueue.lua), the rest wait in the tenant's list."""
    ids = [f"{tenant}-i{i}" for i in range(n)]
    enqueue = redis.register_script(wire.enqueue_script())
    for job_id in ids:
        job: dict[str, Any] = {
            "kind": "speech" if model == TTS_MODEL else "transcription", "model": model,
            "input": "hi", "tenant": tenant, "priority": "interactive",
        }  # fmt: skip
        if model == ASR_MODEL:
            job = {**job, "input": "https://example.com/a.wav"}
        assert await enqueue(keys=wire.enqueue_keys(job_id), args=[job_id, json.dumps(job)])
    return ids


async def _free_places(redis: ArqRedis, model: str, tenant: str, ids: list[str]) -> None:
    """Direct jobs of the tenant leave its admitted set and the queue, as their grants and
    runs take them out."""
    assert await redis.zrem(wire.interactive_admitted_key(model, tenant), *ids) == len(ids)
    await redis.zrem(wire.QUEUE_NAME, *ids)


async def test_an_interactive_job_admitted_from_its_list_holds_its_slot_and_asks_once(
    redis: ArqRedis,
) -> None:
    """An interactive job admitted from its tenant's waiting list gets the slot its first ask
    would take, and its queue place hold before it: its first pick is its grant. Before,
    it was picked only to learn its slot (or to be parked back in its list) and went round
    arq's queue again."""
    limiter, clock = await _limiter(redis)  # an interactive grant at T0: the lane's share is used
    ids = await _interactive(redis, TTS_MODEL, "acme", wire.INTERACTIVE_DIRECT + 1)
    waiting = ids[-1]
    assert await redis.zscore(wire.QUEUE_NAME, waiting) is None  # in its tenant's list
    await _free_places(redis, TTS_MODEL, "acme", ids[:1])
    assert await limiter.admit(TTS_MODEL) == 1
    # the schedule's end: no bulk slot to take
    assert await slot_of(redis, "acct", TTS_MODEL, waiting) == T0 + 1
    place = await redis.zscore(wire.QUEUE_NAME, waiting)
    assert place == _queue_score(T0 + 1)
    marker = await redis.get(wire.cancel_key(waiting))
    assert marker is not None and marker.startswith(b"ticket ")
    counts = await redis.hgetall(_keys(TTS_MODEL)["tenant_tickets"])  # type: ignore[misc]
    assert int(counts[b"interactive:acme"]) == 1
    # taken at its place, it waits the hold and is granted its slot at its one ask
    clock.now = place / 1000
    await redis.config_resetstat()
    QUEUED_TICKET.set(place / 1000)
    lease = await limiter.acquire(TTS_MODEL, job_id=waiting, lane="interactive", tenant="acme")
    assert lease.granted_at == T0 + 1
    assert clock.sleeps == pytest.approx([HOLD])
    assert (await redis.info("commandstats"))["cmdstat_fcall"]["calls"] == 1


async def test_an_interactive_job_admitted_ahead_of_bulk_takes_the_earliest_bulk_slot(
    redis: ArqRedis,
) -> None:
    """While its lane may take bulk slots, an admitted interactive job takes the earliest
    bulk ticket's slot at least hold_s away, as its ask would take the earliest; that bulk
    job moves to the schedule's end, and its queue place with it. A nearer bulk slot's job
    was picked already and waits for it in its worker: moved, it would ask only to be
    deferred."""
    limiter, _ = await _limiter(redis, busy=False, lookahead_s=5.0)
    await _waiting_bulk(redis, TTS_MODEL, [("lead", "bulky"), ("b0", "bulky"), ("b1", "bulky")])
    assert await limiter.admit(TTS_MODEL) == 2
    bulk = dict(await schedule(redis, "acct", TTS_MODEL))
    assert bulk == {b"b0": T0, b"b1": T0 + 1}
    ids = await _interactive(redis, TTS_MODEL, "zip", wire.INTERACTIVE_DIRECT + 1)
    await _free_places(redis, TTS_MODEL, "zip", ids[:1])
    assert await limiter.admit(TTS_MODEL) == 1
    tickets = dict(await schedule(redis, "acct", TTS_MODEL))
    assert tickets == {b"b0": T0, ids[-1].encode(): T0 + 1, b"b1": T0 + 2}
    assert await redis.zscore(wire.QUEUE_NAME, "b1") == _queue_score(T0 + 2)
    assert await redis.zscore(wire.QUEUE_NAME, "b0") == _queue_score(T0)
    assert await redis.zscore(wire.QUEUE_NAME, ids[-1]) == _queue_score(T0 + 1)


async def test_an_admitted_interactive_job_without_a_known_slot_is_due_at_once(
    redis: ArqRedis,
) -> None:
    """A token-limited model's slot depends on the job's audio (unknown before a grant of
    a measured length), and a cancelled job makes no call: neither gets a ticket when
    admitted."""
    limiter, _ = await _limiter(redis, ASR_MODEL, busy_audio_s=None)
    ids = await _interactive(redis, ASR_MODEL, "acme", wire.INTERACTIVE_DIRECT + 1)
    await _free_places(redis, ASR_MODEL, "acme", ids[:1])
    assert await limiter.admit(ASR_MODEL) == 1
    assert await slot_of(redis, "acct", ASR_MODEL, ids[-1]) is None
    assert await redis.zscore(wire.QUEUE_NAME, ids[-1]) == T0 * 1000

    tts, _ = await _limiter(redis)
    ids = await _interactive(redis, TTS_MODEL, "bolt", wire.INTERACTIVE_DIRECT + 1)
    await redis.set(wire.cancel_key(ids[-1]), "cancelled")
    await _free_places(redis, TTS_MODEL, "bolt", ids[:1])
    assert await tts.admit(TTS_MODEL) == 1
    assert await slot_of(redis, "acct", TTS_MODEL, ids[-1]) is None
    assert await redis.get(wire.cancel_key(ids[-1])) == b"cancelled"
    assert await redis.zscore(wire.QUEUE_NAME, ids[-1]) == T0 * 1000


async def test_an_interactive_job_whose_slot_is_now_is_admitted_without_a_ticket(
    redis: ArqRedis,
) -> None:
    """Nothing binds: its first ask is its grant, and a ticket near now would only stand in
    the way of the asks meanwhile (bulk jobs were told to wait behind such tickets)."""
    limiter, _ = await _limiter(redis, busy=False)
    ids = await _interactive(redis, TTS_MODEL, "acme", wire.INTERACTIVE_DIRECT + 1)
    await _free_places(redis, TTS_MODEL, "acme", ids[:1])
    assert await limiter.admit(TTS_MODEL) == 1
    assert await slot_of(redis, "acct", TTS_MODEL, ids[-1]) is None
    assert await redis.get(wire.cancel_key(ids[-1])) is None
    assert await redis.zscore(wire.QUEUE_NAME, ids[-1]) == T0 * 1000


async def test_over_its_share_an_interactive_job_holds_even_a_near_slot(
    redis: ArqRedis,
) -> None:
    """While the interactive lane is over its share, a job admitted from its list would be
    parked back in it at its first ask: it takes its ticket at admission, however near."""
    limiter, clock = await _limiter(redis, busy=False, lookahead_s=5.0)
    await _waiting_bulk(redis, TTS_MODEL, [("lead", "bulky"), ("b0", "bulky"), ("b1", "bulky")])
    assert await limiter.admit(TTS_MODEL) == 2  # b0 at T0, b1 at T0 + 1
    # an interactive grant takes b0's slot (b0 moves to T0 + 2): the lane is at its share
    await limiter.acquire(TTS_MODEL, job_id="x", lane="interactive", tenant="zip")
    ids = await _interactive(redis, TTS_MODEL, "zip", wire.INTERACTIVE_DIRECT + 1)
    # over its share, a tenant has one job in the queue at a time: its 16 are gone
    await _free_places(redis, TTS_MODEL, "zip", ids[:-1])
    clock.now = T0 + 2.9  # the schedule's end, T0 + 3, is within the hold
    assert await limiter.admit(TTS_MODEL) == 1
    assert await slot_of(redis, "acct", TTS_MODEL, ids[-1]) == T0 + 3
    place = await redis.zscore(wire.QUEUE_NAME, ids[-1])
    assert place == _queue_score(T0 + 3) and place < clock.now * 1000


async def test_near_the_schedules_end_a_tenant_is_topped_up_to_what_the_share_lets_jump(
    redis: ArqRedis,
) -> None:
    """With the schedule's end within the hold, interactive jobs admitted from a tenant's list
    get no ticket and are due at once. While bulk jobs hold slots, only as many come into the
    queue as the lane's share still lets take a bulk slot: topped up to 16, the rest asked
    once the share was used and were parked straight back in the list (issue #22)."""
    limiter, clock = await _limiter(redis, busy=False, hold_s=5.0)
    # a caller outside arq that waits for no slot: its asks take tickets
    asker = RedisLimiter(limiter.config, redis, clock=clock)
    for k in range(4):  # four bulk grants in the window
        clock.now = T0 + k
        await asker.acquire(TTS_MODEL, job_id=f"g{k}", lane="bulk", tenant="bolt")
    clock.now = T0 + 3.5
    for job_id in ("t0", "t1"):
        with pytest.raises(CapacityDeferred):
            await asker.acquire(TTS_MODEL, job_id=job_id, lane="bulk", tenant="bolt")
    assert dict(await schedule(redis, "acct", TTS_MODEL)) == {b"t0": T0 + 4, b"t1": T0 + 5}
    m = limiter.config.bulk_min_share
    room = math.ceil(4 * (1 - m) / m + 1)  # what interactive_may_jump lets jump
    assert 1 < room < 8
    direct = wire.INTERACTIVE_DIRECT
    ids = await _interactive(redis, TTS_MODEL, "zip", direct + 8)
    await _free_places(redis, TTS_MODEL, "zip", ids[:direct])
    assert await limiter.admit(TTS_MODEL) == room
    admitted = ids[direct : direct + room]
    in_queue = await redis.zrange(wire.interactive_admitted_key(TTS_MODEL, "zip"), 0, -1)
    assert sorted(in_queue) == sorted(j.encode() for j in admitted)
    for job_id in admitted:  # no ticket: each asks at once
        assert await redis.zscore(wire.QUEUE_NAME, job_id) == math.floor(clock.now * 1000)
    waiting = await redis.lrange(wire.wait_list_key(TTS_MODEL, "zip", "interactive"), 0, -1)
    assert waiting == [j.encode() for j in ids[direct + room :]]
