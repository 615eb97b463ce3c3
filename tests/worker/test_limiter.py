"""The fleet limiter on real Redis: never over quota, leases expire, 429s pause, tickets queue."""

from __future__ import annotations

import asyncio
import itertools
import random
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace

import pytest
from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.core.dialect_constants import ASR_MODEL, TTS_MODEL, VOICECLONE_MODEL
from mimoq.core.errors import CapacityDeferred
from mimoq.core.settings import Settings
from mimoq.worker.limiter import Lease, RedisLimiter, UnlimitedLimiter, build_limiter
from mimoq.worker.limiter.config import KEY_PARTS, LimiterConfig, limiter_keys
from tests.conftest import RedisServer

pytestmark = pytest.mark.redis

#: A limiter that grants back to back (burst) and effectively never runs out: for tests
#: about something other than pacing.
ROOMY = LimiterConfig(account="acct", window_s=60, default_rpm=100_000, burst=1000)


@pytest.fixture
async def clients(redis_server: RedisServer, redis: ArqRedis) -> AsyncIterator[list[ArqRedis]]:
    """Several independent connections to the same (flushed) Redis: one per 'worker'."""
    extra = [ArqRedis.from_url(redis_server.url) for _ in range(3)]
    yield [redis, *extra]
    for client in extra:
        await client.aclose()


async def acquire_eventually(
    limiter: RedisLimiter,
    model: str,
    job_id: str,
    *,
    audio_s: float | None = None,
    late_s: Callable[[], float] = lambda: 0.0,
    deadline_s: float = 20.0,
) -> Lease:
    """What a worker does: on ``CapacityDeferred``, come back when told (arq's defer, which
    may run a little late: ``late_s``), with the same job id."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline_s
    while True:
        try:
            return await limiter.acquire(model, job_id=job_id, audio_s=audio_s)
        except CapacityDeferred as exc:
            assert exc.retry_after_s is not None and exc.retry_after_s > 0
            assert loop.time() + exc.retry_after_s < give_up, "no capacity before the deadline"
            # the deferral itself (arq's Retry(defer=...)), not a stand-in for synchronization
            await asyncio.sleep(exc.retry_after_s + late_s())


def max_in_any_window(times: Sequence[float], weights: Sequence[int], window_s: float) -> int:
    """The largest total weight of grants inside any half-open window [t, t + window_s)."""
    order = sorted(zip(times, weights, strict=True))
    best, total, lo = 0, 0, 0
    for hi in range(len(order)):
        total += order[hi][1]
        while order[hi][0] - order[lo][0] >= window_s:
            total -= order[lo][1]
            lo += 1
        best = max(best, total)
    return best


@pytest.mark.slow
@pytest.mark.parametrize("burst", [1, 10])
async def test_many_acquirers_over_several_clients_never_exceed_the_quota(
    clients: list[ArqRedis], burst: int
) -> None:
    """200 jobs on 4 connections, arriving at random and returning up to 30 ms late. With a
    burst allowance the schedule alone would let 10 + 24.5 through in a window: the guard
    must hold it to 25."""
    config = LimiterConfig(account="acct", window_s=0.5, default_rpm=25, margin_s=0.0, burst=burst)
    limiters = [RedisLimiter(config, c) for c in clients]
    rng = random.Random(7)

    async def job(i: int) -> Lease:
        await asyncio.sleep(rng.uniform(0, 0.5))  # staggered arrivals
        limiter = limiters[i % len(limiters)]
        late = lambda: rng.uniform(0, 0.03)  # noqa: E731
        return await acquire_eventually(limiter, TTS_MODEL, f"job-{i}", late_s=late)

    leases = await asyncio.gather(*(job(i) for i in range(200)))
    times = [lease.granted_at for lease in leases]
    assert len({lease.lease_id for lease in leases}) == 200
    assert max_in_any_window(times, [1] * 200, config.window_s) <= 25
    # and the pace is the quota's, not a crawl: 200 grants at 25 per 0.5 s take ~4 s. Slots a
    # starved host misses are not made up (by design), so a loaded machine is allowed 2x.
    assert max(times) - min(times) < 8 * 0.5 * 2


@pytest.mark.slow
async def test_token_quota_holds_in_every_window_with_the_margin(clients: list[ArqRedis]) -> None:
    """ASR calls of random lengths: tokens and requests both stay within every window of
    window + margin seconds (the guard's promise, covering the send-to-receive spread)."""
    config = LimiterConfig(
        account="acct",
        window_s=0.5,
        target=0.8,
        margin_s=0.06,
        default_rpm=20,
        tpm={ASR_MODEL: 800},
    )
    assert config.guard_margin_s == 0.06
    limiters = [RedisLimiter(config, c) for c in clients]
    rng = random.Random(11)

    async def job(i: int) -> Lease:
        limiter = limiters[i % len(limiters)]
        audio = rng.uniform(1, 12)
        lease = await acquire_eventually(
            limiter, ASR_MODEL, f"asr-{i}", audio_s=audio, late_s=lambda: rng.uniform(0, 0.02)
        )
        await limiter.release(lease, usage={"total_tokens": lease.tokens}, latency_s=0.01)
        return lease

    leases = await asyncio.gather(*(job(i) for i in range(40)))
    times = [lease.granted_at for lease in leases]
    span = config.window_s + config.guard_margin_s
    assert max_in_any_window(times, [lease.tokens for lease in leases], span) <= 800
    assert max_in_any_window(times, [1] * len(leases), span) <= 20
    assert all(lease.tokens > 21 for lease in leases)


async def test_back_to_back_calls_are_spaced_evenly(redis: ArqRedis) -> None:
    config = LimiterConfig(account="acct", window_s=10.0, default_rpm=10, target=1.0)
    limiter = RedisLimiter(config, redis)
    first = await limiter.acquire(TTS_MODEL, job_id="a")
    waits = []
    for job_id in ("b", "c", "d"):
        with pytest.raises(CapacityDeferred) as caught:
            await limiter.acquire(TTS_MODEL, job_id=job_id)
        waits.append(caught.value.retry_after_s)
    # slots 1 s apart: each newcomer is told to come back one slot after the previous one
    assert waits == pytest.approx([1.0, 2.0, 3.0], abs=0.05)
    assert first.granted_at > 0


async def test_a_dead_workers_lease_expires(redis: ArqRedis) -> None:
    config = replace(ROOMY, max_in_flight=2, lease_ttl_s=0.3)
    limiter = RedisLimiter(config, redis)
    held = [await limiter.acquire(TTS_MODEL, job_id=f"dead-{i}") for i in range(2)]
    # ...and the worker holding them is killed: nobody will ever release them
    with pytest.raises(CapacityDeferred, match="in_flight"):
        await limiter.acquire(TTS_MODEL, job_id="next")
    assert (await limiter.snapshot(TTS_MODEL)).in_flight == 2
    lease = await acquire_eventually(limiter, TTS_MODEL, "next", deadline_s=5)
    assert lease.granted_at >= min(h.granted_at for h in held) + 0.3


#: A process that takes the only in-flight slot, says so, and then never releases it.
_HOLDER = """
import asyncio, sys
from arq.connections import ArqRedis
from mimoq.worker.limiter import RedisLimiter
from mimoq.worker.limiter.config import LimiterConfig

async def main() -> None:
    config = LimiterConfig(account="acct", default_rpm=100_000, burst=1000, max_in_flight=1,
                           lease_ttl_s=float(sys.argv[2]))
    lease = await RedisLimiter(config, ArqRedis.from_url(sys.argv[1])).acquire(
        "mimo-v2.5-tts", job_id="victim")
    print(lease.granted_at, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.mark.slow
async def test_a_killed_worker_process_gives_its_lease_back(
    redis_server: RedisServer, redis: ArqRedis
) -> None:
    ttl_s = 1.0
    config = replace(ROOMY, max_in_flight=1, lease_ttl_s=ttl_s)
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLDER, redis_server.url, str(ttl_s),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(holder.stdout.readline(), timeout=30)
        held_at = float(line)  # the child's own signal that it holds the lease
    finally:
        holder.kill()  # SIGKILL: no release, no clean-up of any kind
        await holder.wait()
    limiter = RedisLimiter(config, redis)
    with pytest.raises(CapacityDeferred, match="in_flight"):
        await limiter.acquire(TTS_MODEL, job_id="next")
    lease = await acquire_eventually(limiter, TTS_MODEL, "next", deadline_s=10)
    assert lease.granted_at >= held_at + ttl_s


async def test_release_frees_the_in_flight_slot_at_once(redis: ArqRedis) -> None:
    limiter = RedisLimiter(replace(ROOMY, max_in_flight=1), redis)
    lease = await limiter.acquire(TTS_MODEL, job_id="one")
    with pytest.raises(CapacityDeferred):
        await limiter.acquire(TTS_MODEL, job_id="two")
    await limiter.release(lease, usage=None, latency_s=2.5)
    await limiter.acquire(TTS_MODEL, job_id="two")
    snapshot = await limiter.snapshot(TTS_MODEL)
    assert snapshot.in_flight == 1 and snapshot.latency_ewma_s == 2.5


async def test_a_429_pauses_every_worker_on_that_model_only(clients: list[ArqRedis]) -> None:
    config = replace(ROOMY, cooldown_s=5.0)
    reporter, other = RedisLimiter(config, clients[0]), RedisLimiter(config, clients[1])
    await other.acquire(TTS_MODEL, job_id="before")
    await reporter.rate_limited(TTS_MODEL, retry_after_s=1.5)
    with pytest.raises(CapacityDeferred, match="cooldown") as caught:
        await other.acquire(TTS_MODEL, job_id="after")
    assert caught.value.retry_after_s == pytest.approx(1.5, abs=0.1)
    await other.acquire(ASR_MODEL, job_id="asr", audio_s=4)
    await other.acquire(VOICECLONE_MODEL, job_id="clone")
    snapshot = await other.snapshot(TTS_MODEL)
    # the first 429 after a clean history steps down by first_decrease
    assert snapshot.rate_factor == config.first_decrease and snapshot.cooldown_remaining_s > 1.0
    assert snapshot.requests_effective == pytest.approx(100_000 * 0.98 * config.first_decrease)
    assert (await other.snapshot(ASR_MODEL)).rate_factor == 1.0


async def test_the_default_pause_applies_without_retry_after(redis: ArqRedis) -> None:
    limiter = RedisLimiter(replace(ROOMY, cooldown_s=3.0), redis)
    await limiter.rate_limited(TTS_MODEL, None)
    with pytest.raises(CapacityDeferred) as caught:
        await limiter.acquire(TTS_MODEL, job_id="x")
    assert caught.value.retry_after_s == pytest.approx(3.0, abs=0.1)


async def test_429s_of_one_episode_step_the_rate_down_once(redis: ArqRedis) -> None:
    config = replace(ROOMY, cooldown_s=2.0)
    limiter = RedisLimiter(config, redis)
    for _ in range(5):  # every call in flight comes back 429 at about the same time
        await limiter.rate_limited(TTS_MODEL, None)
    snapshot = await limiter.snapshot(TTS_MODEL)
    assert snapshot.rate_factor == config.first_decrease and snapshot.rate_limited_total == 5
    await limiter.rate_limited(TTS_MODEL, 4.0)  # a later Retry-After lengthens the pause
    snapshot = await limiter.snapshot(TTS_MODEL)
    assert snapshot.rate_factor == config.first_decrease and snapshot.cooldown_remaining_s > 3.5


async def test_the_rate_recovers_additively_to_the_target(redis: ArqRedis) -> None:
    config = LimiterConfig(
        account="acct", window_s=1.0, recovery_per_window=0.5, decrease=0.5, first_decrease=0.5
    )
    limiter = RedisLimiter(config, redis)
    await limiter.rate_limited(TTS_MODEL, 0.0)
    loop = asyncio.get_running_loop()
    seen = [(await limiter.snapshot(TTS_MODEL)).rate_factor]
    deadline = loop.time() + 5
    while seen[-1] < 1.0:  # poll the real state until it is back at the target
        assert loop.time() < deadline, f"no recovery: {seen[-5:]}"
        await asyncio.sleep(0.05)
        seen.append((await limiter.snapshot(TTS_MODEL)).rate_factor)
    assert seen[0] == pytest.approx(0.5, abs=0.02)
    assert any(0.55 < f < 0.95 for f in seen), "recovery must be gradual, not a jump"
    assert seen == sorted(seen)


async def seconds_ahead(
    redis: ArqRedis, config: LimiterConfig, model: str, *jobs: str
) -> list[float]:
    """Where each job's reserved slot lies, in seconds from now (Redis TIME)."""
    tickets = limiter_keys(config.account, model)[KEY_PARTS.index("tickets")]
    sec, usec = await redis.time()
    now = sec + usec / 1e6
    return [float(await redis.zscore(tickets, job)) - now for job in jobs]


async def wait_of(
    limiter: RedisLimiter, model: str, job_id: str, audio_s: float | None = None
) -> float:
    with pytest.raises(CapacityDeferred) as caught:
        await limiter.acquire(model, job_id=job_id, audio_s=audio_s)
    assert caught.value.retry_after_s is not None
    return caught.value.retry_after_s


async def test_a_429_moves_the_queue_behind_the_pause_at_the_lower_rate(redis: ArqRedis) -> None:
    config = LimiterConfig(
        account="acct", window_s=10.0, default_rpm=10, target=1.0, decrease=0.5, first_decrease=0.5
    )
    limiter = RedisLimiter(config, redis)
    await limiter.acquire(TTS_MODEL, job_id="first")
    queue = ("q1", "q2", "q3")
    before = [await wait_of(limiter, TTS_MODEL, j) for j in queue]
    await limiter.rate_limited(TTS_MODEL, 10.0)
    after = await seconds_ahead(redis, config, TTS_MODEL, *queue)
    assert before == pytest.approx([1.0, 2.0, 3.0], abs=0.05)
    # the queue keeps its order, starts after the pause, and is spaced for half the rate
    assert after[0] == pytest.approx(10.0, abs=0.05)
    assert [b - a for a, b in itertools.pairwise(after)] == pytest.approx([2.0, 2.0], abs=0.01)
    newcomer = await wait_of(limiter, TTS_MODEL, "q4")
    (q4,) = await seconds_ahead(redis, config, TTS_MODEL, "q4")
    assert q4 == pytest.approx(after[-1] + 2.0, abs=0.05)
    # a slot more than a window ahead is a place in the queue: its holder comes back
    # half-way there, to read it again
    assert newcomer == pytest.approx(q4 / 2, abs=0.05)
    assert await wait_of(limiter, TTS_MODEL, "q1") == pytest.approx(after[0], abs=0.05)


async def test_the_queue_is_respaced_when_the_token_estimate_is_calibrated(
    redis: ArqRedis,
) -> None:
    """Tickets queued at the uncalibrated estimate would keep their too-wide spacing until
    the queue drained (measured: 58 % of the token quota with a backlog); once the estimate
    moved by more than 5 %, the queue is spaced for the new one."""
    config = LimiterConfig(
        account="acct", window_s=10.0, default_rpm=1000, target=1.0, tpm={ASR_MODEL: 1000}
    )  # 10 ms a token
    limiter = RedisLimiter(config, redis)
    first = await limiter.acquire(ASR_MODEL, job_id="first", audio_s=10.0)
    assert first.tokens == 21 + 113  # 11.25 tokens a second, uncalibrated
    queue = ("q1", "q2", "q3")
    for job in queue:
        await wait_of(limiter, ASR_MODEL, job, audio_s=10.0)
    spaced = await seconds_ahead(redis, config, ASR_MODEL, *queue)
    assert [b - a for a, b in itertools.pairwise(spaced)] == pytest.approx([1.34] * 2, abs=0.01)
    # the call really cost 5 tokens a second: the estimate moves to 10.0 (EWMA), 11 % off
    await limiter.release(first, usage={"total_tokens": 21 + 50}, latency_s=1.0)
    assert (await limiter.snapshot(ASR_MODEL)).tokens_per_audio_s == pytest.approx(10.0)
    respaced = await seconds_ahead(redis, config, ASR_MODEL, *queue)
    assert respaced[0] == pytest.approx(spaced[0], abs=0.05)  # the head keeps its slot
    assert [b - a for a, b in itertools.pairwise(respaced)] == pytest.approx([1.21] * 2, abs=0.01)
    (q4,) = [await wait_of(limiter, ASR_MODEL, "q4", audio_s=10.0)]
    assert q4 == pytest.approx(respaced[-1] + 1.21, abs=0.05)  # the schedule's end moved too


async def test_the_queue_is_respaced_as_the_rate_recovers_after_a_429(redis: ArqRedis) -> None:
    config = LimiterConfig(
        account="acct",
        window_s=1.0,
        default_rpm=10,
        target=1.0,
        decrease=0.5,
        first_decrease=0.5,
        recovery_per_window=0.25,
        ticket_grace_s=60,
    )  # 0.1 s slots; 0.2 s at half the rate
    clock = [1000.0]  # injected: the recovery is a function of time, not of sleeping
    limiter = RedisLimiter(config, redis, clock=lambda: clock[0])
    await limiter.rate_limited(TTS_MODEL, 0.0)
    await limiter.acquire(TTS_MODEL, job_id="first")
    queue = [f"q{i}" for i in range(40)]
    for job in queue:
        await wait_of(limiter, TTS_MODEL, job)
    tickets = limiter_keys(config.account, TTS_MODEL)[KEY_PARTS.index("tickets")]

    async def ahead() -> list[float]:
        return [float(await redis.zscore(tickets, job)) - clock[0] for job in queue]

    spaced = await ahead()
    assert spaced[-1] - spaced[-2] == pytest.approx(0.2, abs=0.015)
    clock[0] += 1.0  # a window later the rate has regained its step (a clean history)
    assert (await limiter.snapshot(TTS_MODEL)).rate_factor >= 0.9
    await wait_of(limiter, TTS_MODEL, "newcomer")  # any decision notices the drift
    respaced = await ahead()
    assert respaced[-1] - respaced[-2] < 0.1 / 0.85
    assert respaced == sorted(respaced)  # same order


async def test_asr_token_estimate_converges_to_the_observed_rate(redis: ArqRedis) -> None:
    config = replace(ROOMY, tpm={ASR_MODEL: 10**9})
    limiter = RedisLimiter(config, redis)
    # uncalibrated: the documented 4 s clip costs 46 prompt + 20 completion tokens
    first = await limiter.acquire(ASR_MODEL, job_id="clip-0", audio_s=4.0)
    assert first.tokens == 66
    rng = random.Random(3)
    true_rate = 20.0  # this account's audio really costs 20 tokens a second
    lease = first
    for i in range(1, 31):
        actual = round(21 + true_rate * lease.audio_s) if lease.audio_s else 0
        await limiter.release(lease, usage={"total_tokens": actual}, latency_s=1.0)
        lease = await limiter.acquire(ASR_MODEL, job_id=f"clip-{i}", audio_s=rng.uniform(2, 30))
    snapshot = await limiter.snapshot(ASR_MODEL)
    assert snapshot.tokens_per_audio_s == pytest.approx(true_rate, rel=0.02)
    assert lease.audio_s is not None
    assert lease.tokens == pytest.approx(21 + true_rate * lease.audio_s, rel=0.02)


async def test_usage_reconciles_the_tokens_counted_in_the_window(redis: ArqRedis) -> None:
    config = replace(ROOMY, tpm={ASR_MODEL: 300})
    limiter = RedisLimiter(config, redis)
    lease = await limiter.acquire(ASR_MODEL, job_id="a", audio_s=4.0)
    assert (await limiter.snapshot(ASR_MODEL)).tokens_recent == 66
    await limiter.release(lease, usage={"total_tokens": 250}, latency_s=1.0)
    assert (await limiter.snapshot(ASR_MODEL)).tokens_recent == 250  # debited
    # the next 66-token call no longer fits the window's 300 tokens
    with pytest.raises(CapacityDeferred):
        await limiter.acquire(ASR_MODEL, job_id="b", audio_s=4.0)
    await limiter.release(lease, usage={"total_tokens": 10}, latency_s=1.0)
    assert (await limiter.snapshot(ASR_MODEL)).tokens_recent == 10  # credited


async def test_unknown_audio_length_is_charged_conservatively(redis: ArqRedis) -> None:
    limiter = RedisLimiter(replace(ROOMY, tpm={ASR_MODEL: 10**6}), redis)
    unknown = await limiter.acquire(ASR_MODEL, job_id="u")
    short = await limiter.acquire(ASR_MODEL, job_id="s", audio_s=4.0)
    assert unknown.tokens > 10 * short.tokens
    assert (await limiter.acquire(TTS_MODEL, job_id="t", audio_s=4.0)).tokens == 0


@pytest.mark.slow
async def test_a_deferred_job_is_served_before_newer_arrivals(redis: ArqRedis) -> None:
    config = LimiterConfig(account="acct", window_s=2.0, default_rpm=5)  # slots ~0.4 s apart
    limiter = RedisLimiter(config, redis)
    await limiter.acquire(TTS_MODEL, job_id="first")
    with pytest.raises(CapacityDeferred) as caught:
        await limiter.acquire(TTS_MODEL, job_id="old")
    old_back_in = caught.value.retry_after_s
    assert old_back_in is not None
    granted: dict[str, float] = {}

    async def impatient(job_id: str) -> None:
        # newer jobs ignore what they are told and ask again every 10 ms
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while loop.time() < deadline:
            try:
                granted[job_id] = (await limiter.acquire(TTS_MODEL, job_id=job_id)).granted_at
                return
            except CapacityDeferred:
                await asyncio.sleep(0.01)
        raise AssertionError(f"{job_id} never granted")

    async def old_job() -> None:
        await asyncio.sleep(old_back_in)  # the deferral, as arq would run it
        granted["old"] = (await limiter.acquire(TTS_MODEL, job_id="old")).granted_at

    await asyncio.gather(old_job(), *(impatient(f"new-{i}") for i in range(4)))
    newer = [t for job, t in granted.items() if job != "old"]
    # the old job got in on its first return (old_job does not retry), ahead of them all
    assert granted["old"] < min(newer)


async def test_unclaimed_tickets_expire(redis: ArqRedis) -> None:
    config = LimiterConfig(account="acct", window_s=1.0, default_rpm=10, ticket_grace_s=0.2)
    limiter = RedisLimiter(config, redis)
    await limiter.acquire(TTS_MODEL, job_id="first")
    for job_id in ("gone-1", "gone-2"):
        with pytest.raises(CapacityDeferred):
            await limiter.acquire(TTS_MODEL, job_id=job_id)
    snapshot = await limiter.snapshot(TTS_MODEL)
    assert snapshot.tickets == 2 and snapshot.ticket_backlog_s > 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while (await limiter.snapshot(TTS_MODEL)).tickets:
        assert loop.time() < deadline, "tickets never expired"
        await asyncio.sleep(0.05)
    # a job back after its ticket expired is a new arrival: the schedule is free again
    lease = await limiter.acquire(TTS_MODEL, job_id="gone-1")
    assert lease.model == TTS_MODEL
    assert not await redis.zcard(f"{wire.LIMITER_PREFIX}{{acct:{TTS_MODEL}}}:tickets")


async def test_redis_keys_carry_the_prefix_and_no_secret(redis: ArqRedis) -> None:
    settings = Settings(mimo_api_key="sk-very-secret-key", limit_burst=10)
    limiter = build_limiter(settings, redis)
    lease = await limiter.acquire(ASR_MODEL, job_id="job", audio_s=3.0)
    await limiter.release(lease, usage={"total_tokens": 50}, latency_s=0.5)
    await limiter.rate_limited(ASR_MODEL, None)
    keys = [k.decode() async for k in redis.scan_iter("*")]
    assert keys and all(k.startswith(wire.LIMITER_PREFIX) for k in keys)
    for key in keys:
        assert "secret" not in key
        assert await redis.ttl(key) > 0  # idle limiters do not live forever
    assert "secret" not in repr(lease) and "secret" not in repr(limiter.__dict__)


async def test_disabled_limits_grant_everything(redis: ArqRedis) -> None:
    limiter = build_limiter(Settings(limits_enabled=False), redis)
    assert isinstance(limiter, UnlimitedLimiter)
    leases = [await limiter.acquire(TTS_MODEL, job_id=str(i)) for i in range(500)]
    await limiter.rate_limited(TTS_MODEL, 10)
    await limiter.acquire(TTS_MODEL, job_id="after-429")
    for lease in leases:
        await limiter.release(lease, usage=None, latency_s=None)
    assert not [k async for k in redis.scan_iter("*")]
