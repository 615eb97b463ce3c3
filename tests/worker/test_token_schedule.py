"""A token-limited model's schedule on calls of varied lengths (core/scripts/limiter_*.lua):
the tokens of a call are fitted as a line of its audio (token_fit), a credit the schedule's
end cannot take yet is carried to the next shift (settle_shift), and on a token-bound model
a short call takes its token time, not a whole request's slot (slot_length). Each of the
three left token quota unused on transcriptions of varied lengths (issue #22).
Real Redis, the real scripts, an injected clock."""

from __future__ import annotations

from dataclasses import replace

import pytest
from arq.connections import ArqRedis

from mimoq.core.dialect_constants import ASR_MODEL
from mimoq.core.errors import CapacityDeferred
from mimoq.worker.limiter import Lease, LimiterConfig, RedisLimiter
from mimoq.worker.limiter.config import KEY_PARTS, limiter_keys
from tests.worker.test_limiter import SECONDS, T0, Clock

pytestmark = pytest.mark.redis

#: Far from binding: releases settle tokens and calibrate the estimate, nothing waits.
LOOSE = LimiterConfig(account="acct", window_s=60, default_rpm=100_000, burst=1000,
                      tpm={ASR_MODEL: 10**9})  # fmt: skip
#: A transcript's text tokens that do not grow with its audio, as MiMo's (and the
#: simulator's) do for one sentence: 21 prompt tokens + 7 of text + 6.25 a second.
BASE, RATE = 28, 6.25
LENGTHS = (2.4, 13.2, 24.0, 34.8, 45.6)


def _state_key() -> str:
    return dict(zip(KEY_PARTS, limiter_keys("acct", ASR_MODEL), strict=True))["state"]


async def _state(redis: ArqRedis) -> dict[str, float]:
    raw = await redis.hgetall(_state_key())  # type: ignore[misc]
    return {k.decode(): float(v) for k, v in raw.items() if k != b"rg"}


async def _call(limiter: RedisLimiter, job: str, audio_s: float, tokens: int) -> int:
    """Grant and release one call of ``audio_s`` that MiMo counted as ``tokens``; returns
    the tokens it was estimated at."""
    lease = await limiter.acquire(ASR_MODEL, job_id=job, audio_s=audio_s, lane="bulk")
    await limiter.release(lease, usage={"total_tokens": tokens}, latency_s=0.5)
    return lease.tokens


async def test_varied_lengths_fit_the_tokens_besides_the_audio_and_the_rate(
    redis: ArqRedis,
) -> None:
    limiter = RedisLimiter(LOOSE, redis, clock=Clock())
    for i in range(60):
        audio = LENGTHS[i % len(LENGTHS)]
        await _call(limiter, f"j{i}", audio, round(BASE + RATE * audio))
    state = await _state(redis)
    assert state["tok_base"] == pytest.approx(BASE, abs=1.0)
    assert state["tok_rate"] == pytest.approx(RATE, rel=0.02)
    # `mimoq limits` shows both
    snapshot = await limiter.snapshot(ASR_MODEL)
    assert snapshot.tokens_per_call == pytest.approx(BASE, abs=1.0)
    assert snapshot.tokens_per_audio_s == pytest.approx(RATE, rel=0.02)
    # the estimates now meet what MiMo counts, short clips and long ones alike
    for audio in (2.4, 45.6):
        estimate = await _call(limiter, f"probe-{audio}", audio, round(BASE + RATE * audio))
        assert estimate == pytest.approx(BASE + RATE * audio, abs=2)


async def test_calls_of_one_length_fit_no_line_and_the_rate_alone_follows_them(
    redis: ArqRedis,
) -> None:
    """The same calls of one length fit no line: the rate alone follows them, on the
    configured tokens besides the audio, and the typical call is still estimated right."""
    limiter = RedisLimiter(LOOSE, redis, clock=Clock())
    for i in range(30):
        await _call(limiter, f"j{i}", 24.0, round(BASE + RATE * 24.0))
    state = await _state(redis)
    assert "tok_base" not in state
    assert (await limiter.snapshot(ASR_MODEL)).tokens_per_call == 21
    assert state["tok_rate"] == pytest.approx((BASE + RATE * 24.0 - 21) / 24.0, rel=0.01)
    assert await _call(limiter, "probe", 24.0, 178) == pytest.approx(178, abs=1)


async def test_a_credit_the_last_ticket_stops_is_carried_to_the_next_debit(
    redis: ArqRedis,
) -> None:
    """A release whose call used fewer tokens than its estimate moves the schedule's end in,
    but never in front of the slot after the last queued ticket; what that floor stopped is
    carried (state ``owed``) and taken off the next debit, so the end follows the calls'
    own lengths over time. Before, the rest of the credit was lost."""
    clock = Clock()
    # one request a second; 1000 tokens a 10 s window: 0.01 s a token
    config = replace(SECONDS, tpm={ASR_MODEL: 1000})
    limiter = RedisLimiter(config, redis, clock=clock, sleep=clock.sleep)
    first = await limiter.acquire(ASR_MODEL, job_id="first", audio_s=20.0, lane="bulk")
    # queued behind it: a ticket at the schedule's end (21 + 11.25 x 20 = 246 tokens a slot)
    with pytest.raises(CapacityDeferred):
        await limiter.acquire(ASR_MODEL, job_id="queued", audio_s=20.0, lane="bulk")
    ticket = T0 + 2.46
    assert (await _state(redis))["tat"] == pytest.approx(ticket + 2.46)

    async def settle(lease: Lease, tokens: int) -> None:
        # (no audio: the rate stays, so no re-plan moves the end meanwhile)
        call = {"lease": lease.lease_id, "estimate": lease.tokens, "actual": tokens,
                "audio": -1, "latency": 0.5, "lag": -1}  # fmt: skip
        await limiter._send_releases(ASR_MODEL, [call])

    # 46 tokens used of 246: a 2.0 s credit would put the end at T0 + 2.92, in front of the
    # slot after the queued ticket (T0 + 3.46): the end stops there, 0.54 s owed
    await settle(first, 46)
    state = await _state(redis)
    assert state["tat"] == pytest.approx(ticket + 1.0)
    assert state["owed"] == pytest.approx(0.54)
    # the queued call, granted at its slot, used 346 tokens: its 1.0 s debit less the 0.54 s
    clock.now = ticket
    queued = await limiter.acquire(ASR_MODEL, job_id="queued", audio_s=20.0, lane="bulk")
    await settle(queued, 346)
    state = await _state(redis)
    assert state["tat"] == pytest.approx(ticket + 1.0 + 1.0 - 0.54)
    assert state["owed"] == pytest.approx(0.0)


async def test_a_token_bound_models_short_call_takes_its_token_time_not_a_request_slot(
    redis: ArqRedis,
) -> None:
    """On a model whose typical call takes longer than a request's slot, a call shorter than
    that slot is scheduled for its token time (down to a quarter slot); while the typical call
    is shorter, every call still takes at least a request's slot."""
    config = replace(SECONDS, tpm={ASR_MODEL: 1000})
    for typical, short_slot in ((20.0, 0.44), (1.0, 1.0)):
        clock = Clock()
        account = f"typical-{typical:g}"
        limiter = RedisLimiter(replace(config, account=account), redis, clock=clock)
        # the model's typical audio: one granted call of that measured length
        await limiter.acquire(ASR_MODEL, job_id="typical", audio_s=typical, lane="bulk")
        state_key = dict(zip(KEY_PARTS, limiter_keys(account, ASR_MODEL), strict=True))["state"]
        end = float(await redis.hget(state_key, "tat"))  # type: ignore[misc]
        clock.now = end
        # a 2 s clip: 21 + 11.25 x 2 = 44 tokens, 0.44 s of token time, granted at the end
        await limiter.acquire(ASR_MODEL, job_id="short", audio_s=2.0, lane="bulk")
        after = float(await redis.hget(state_key, "tat"))  # type: ignore[misc]
        assert after - end == pytest.approx(short_slot), typical


async def test_held_back_interactive_holders_do_not_come_back_together(
    redis: ArqRedis,
) -> None:
    """Two interactive transcriptions due by the time the pace lets one more go: the first
    held back goes to the schedule's end, the other comes back when the pace allows, alone.
    Before, both came back at that same time, and one was held back again at each grant."""
    clock = Clock()
    # one request a second; short clips (78 tokens, 0.78 s): every call takes a request slot;
    # no hold, so every wait is a deferral the test sees
    config = replace(SECONDS, tpm={ASR_MODEL: 1000}, hold_s=0.0)
    limiter = RedisLimiter(config, redis, clock=clock, sleep=clock.sleep)
    keys = dict(zip(KEY_PARTS, limiter_keys("acct", ASR_MODEL), strict=True))
    await limiter.acquire(ASR_MODEL, job_id="a", audio_s=5.0)
    for job in ("b", "c", "d"):  # tickets at T0 + 1, 2, 3
        with pytest.raises(CapacityDeferred):
            await limiter.acquire(ASR_MODEL, job_id=job, audio_s=5.0)
    # every holder is back late, at T0 + 3.2: b goes, which paces the next grant to T0 + 4.2
    # (0.75 slot early: T0 + 3.45)
    clock.now = T0 + 3.2
    await limiter.acquire(ASR_MODEL, job_id="b", audio_s=5.0)
    for job in ("c", "d"):
        with pytest.raises(CapacityDeferred):
            await limiter.acquire(ASR_MODEL, job_id=job, audio_s=5.0)
    slots = {
        job.decode(): at
        for job, at in await redis.zrange(keys["interactive_tickets"], 0, -1, withscores=True)
    }
    # c was held back while d was due too: to the schedule's end (after d's slot, T0 + 4);
    # d, then alone, comes back when the pace allows
    assert slots == {"c": pytest.approx(T0 + 4.0), "d": pytest.approx(T0 + 3.45)}


async def test_a_bulk_holder_is_paced_to_the_next_ticket_not_held_back_at_its_slot(
    redis: ArqRedis,
) -> None:
    """A credit places the bulk tickets admitted after it earlier than the slots before them
    were long. The pace moves only as far as the next bulk ticket, so that ticket's holder is
    granted at its slot; paced by the slot's length, it was held back by a fraction of a
    slot and sent to the schedule's end, and its slot went unused."""
    clock = Clock()
    config = replace(SECONDS, tpm={ASR_MODEL: 1000}, hold_s=0.0)
    limiter = RedisLimiter(config, redis, clock=clock, sleep=clock.sleep)
    keys = dict(zip(KEY_PARTS, limiter_keys("acct", ASR_MODEL), strict=True))
    await limiter.acquire(ASR_MODEL, job_id="first", audio_s=20.0, lane="bulk")
    for job in ("a0", "a1"):  # 246 tokens each: tickets at T0 + 2.46 and T0 + 4.92
        with pytest.raises(CapacityDeferred):
            await limiter.acquire(ASR_MODEL, job_id=job, audio_s=20.0, lane="bulk")
    # a1's ticket where a credit would have put it, 1.2 s after a0's
    await redis.zadd(keys["bulk_tickets"], {"a1": T0 + 3.66}, xx=True)
    clock.now = T0 + 2.46
    await limiter.acquire(ASR_MODEL, job_id="a0", audio_s=20.0, lane="bulk")
    assert float(await redis.hget(keys["state"], "ptat")) == pytest.approx(T0 + 3.66)  # type: ignore[misc]
    clock.now = T0 + 3.66
    lease = await limiter.acquire(ASR_MODEL, job_id="a1", audio_s=20.0, lane="bulk")
    assert lease.granted_at == pytest.approx(T0 + 3.66)


async def test_varied_lengths_are_planned_a_large_call_below_the_quota(redis: ArqRedis) -> None:
    """A window of calls of varied lengths spaced on the typical one holds up to a large call
    more than the average: once the fit knows the spread (state ``lump``: the mean call's
    tokens + 2 deviations), slots are sized on the quota less that call, so the hard guard
    seldom has to hold a call back."""
    clock = Clock()
    # target 1.0, 1000 tokens a 10 s window: without the lump, 0.01 s a token
    config = replace(SECONDS, tpm={ASR_MODEL: 1000})
    limiter = RedisLimiter(config, redis, clock=clock, sleep=clock.sleep)
    for i in range(40):
        clock.now += 11.0  # each call alone in its window
        audio = LENGTHS[i % len(LENGTHS)]
        await _call(limiter, f"j{i}", audio, round(BASE + RATE * audio))
    state = await _state(redis)
    # about 178 tokens on average, 6.25 a second over lengths 15 s apart on average
    assert 300 < state["lump"] < 420
    budget = 1 - state["lump"] / 1000
    clock.now += 11.0
    lease = await limiter.acquire(ASR_MODEL, job_id="probe", audio_s=24.0, lane="bulk")
    slot = float(await redis.hget(_state_key(), "tat")) - clock.now  # type: ignore[misc]
    assert slot == pytest.approx(lease.tokens * 10.0 / (1000 * budget))
    await limiter.release(lease, usage={"total_tokens": 178}, latency_s=0.5)
    # the lengths stop varying: the room goes, and slots are the quota's again
    for i in range(80):
        clock.now += 11.0
        await _call(limiter, f"u{i}", 24.0, 178)
    assert (await _state(redis))["lump"] == 0
    clock.now += 11.0
    lease = await limiter.acquire(ASR_MODEL, job_id="probe-2", audio_s=24.0, lane="bulk")
    slot = float(await redis.hget(_state_key(), "tat")) - clock.now  # type: ignore[misc]
    assert slot == pytest.approx(lease.tokens * 10.0 / 1000)
