"""The fleet limiter on real Redis: never over quota, leases expire, 429s pause, tickets queue.

Every decision is taken against an injected clock (the scripts' ``now``), never Redis
TIME, and nothing here sleeps in real time: single-client tests step a ``Clock`` by hand
(and record the limiter's in-process holds), multi-client tests run their workers on
``VirtualTime``, which keeps their real connections and the scripts' atomicity but jumps
the clock whenever every worker is waiting.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import redis as sync_redis
from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.core.dialect_constants import ASR_MODEL, TTS_MODEL, VOICECLONE_MODEL
from mimoq.core.errors import CapacityDeferred, JobCancelled
from mimoq.core.settings import Settings
from mimoq.worker.limiter import Lease, RedisLimiter, UnlimitedLimiter, build_limiter
from mimoq.worker.limiter.config import KEY_PARTS, LimiterConfig, limiter_keys
from mimoq.worker.limiter.core import MAX_HOLDS, QUEUED_TICKET
from tests.conftest import RedisServer, start_redis_server
from tests.support.limiter_tickets import schedule, slot_of
from tests.worker.virtual_time import VirtualTime

pytestmark = pytest.mark.redis

#: A limiter that grants back to back (burst) and effectively never runs out: for tests
#: about something other than pacing.
ROOMY = LimiterConfig(account="acct", window_s=60, default_rpm=100_000, burst=1000)
#: One-second slots and the default hold: for tables of waits.
SECONDS = LimiterConfig(account="acct", window_s=10.0, default_rpm=10, target=1.0, hold_s=0.25)
#: Where the injected clocks start (any time will do: Redis TIME is never read).
T0 = 1000.0


@dataclass
class Clock:
    """An injected clock stepped by the test; ``sleep`` is the limiter's in-process hold:
    it records each wait and moves the clock by ``moves`` times it."""

    now: float = T0
    moves: float = 1.0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay * self.moves


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """This module's own server, without the session server's append-only file: that one
    is written and fsynced on every write, which made each script call ~4x slower (4-6 ms
    on a busy host); nothing here restarts the server, so nothing needs it to persist."""
    server = start_redis_server()
    with sync_redis.Redis(port=server.port) as admin:
        admin.config_set("appendonly", "no")
    yield server
    server.close()


@pytest.fixture
async def clients(redis_server: RedisServer, redis: ArqRedis) -> AsyncIterator[list[ArqRedis]]:
    """Several independent connections to the same (flushed) Redis: one per 'worker'."""
    extra = [ArqRedis.from_url(redis_server.url) for _ in range(3)]
    yield [redis, *extra]
    for client in extra:
        await client.aclose()


async def acquire_eventually(
    vt: VirtualTime,
    limiter: RedisLimiter,
    model: str,
    job_id: str,
    *,
    audio_s: float | None = None,
    late_s: Callable[[], float] = lambda: 0.0,
    deadline_s: float = 20.0,
) -> Lease:
    """What a worker does: on ``CapacityDeferred``, come back when told (arq's defer, which
    may run a little late: ``late_s``), with the same job id; in virtual time."""
    give_up = vt.clock() + deadline_s
    while True:
        try:
            return await limiter.acquire(model, job_id=job_id, audio_s=audio_s)
        except CapacityDeferred as exc:
            assert exc.retry_after_s is not None and exc.retry_after_s > 0
            assert vt.clock() + exc.retry_after_s < give_up, "no capacity before the deadline"
            # the deferral itself (arq's Retry(defer=...)), not a stand-in for synchronization
            await vt.sleep(exc.retry_after_s + late_s())


async def outcome(
    limiter: RedisLimiter,
    job_id: str,
    *,
    model: str = TTS_MODEL,
    audio_s: float | None = None,
    lane: str = "interactive",
) -> tuple[str, float]:
    """One ``acquire``: ("granted", granted_at) or (the decision, retry_after_s)."""
    try:
        lease = await limiter.acquire(model, job_id=job_id, audio_s=audio_s, lane=lane)
    except CapacityDeferred as exc:
        decision = re.search(r"\((\w+)\)", str(exc))
        assert decision is not None and exc.retry_after_s is not None
        return decision[1], exc.retry_after_s
    return "granted", lease.granted_at


def ms(retry_s: float) -> Any:
    """A deferral of ``retry_s``, as told: rounded up to arq's millisecond."""
    return pytest.approx(retry_s + 0.0005, abs=0.0006)


def deferred(decision: str, retry_s: float) -> Any:
    """What ``outcome`` returns for a deferral of ``retry_s``."""
    return (decision, ms(retry_s))


def granted(at: float) -> Any:
    """What ``outcome`` returns for a grant at ``at`` (Redis round-trips floats as text)."""
    return ("granted", pytest.approx(at, abs=1e-9))


def expect(decision: str, value: float) -> Any:
    return granted(value) if decision == "granted" else deferred(decision, value)


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


class CountedHolds:
    """``VirtualTime.sleep`` as the limiter's hold, counting the holds."""

    def __init__(self, vt: VirtualTime) -> None:
        self.vt = vt
        self.n = 0

    async def __call__(self, delay: float) -> None:
        self.n += 1
        await self.vt.sleep(delay)


@pytest.mark.slow  # ~1,600 script calls: 1.5 s alone, several seconds on a busy host
@pytest.mark.parametrize("burst", [1, 10])
async def test_many_acquirers_over_several_clients_never_exceed_the_quota(
    clients: list[ArqRedis], burst: int
) -> None:
    """200 jobs on 4 connections, arriving at random and returning up to 30 ms late, holding
    in-process for slots closer than ``hold_s``. With a burst allowance the schedule alone
    would let 10 + 24.5 through in a window: the guard must hold it to 25."""
    config = LimiterConfig(account="acct", window_s=0.5, default_rpm=25, margin_s=0.0, burst=burst)
    vt = VirtualTime()
    holds = CountedHolds(vt)
    limiters = [RedisLimiter(config, c, clock=vt.clock, sleep=holds) for c in clients]

    async def job(i: int) -> Lease:
        rng = random.Random(i)  # per job: the interleaving of the connections may vary
        await vt.sleep(rng.uniform(0, 0.5))  # staggered arrivals
        limiter = limiters[i % len(limiters)]
        late = lambda: rng.uniform(0, 0.03)  # noqa: E731
        return await acquire_eventually(vt, limiter, TTS_MODEL, f"job-{i}", late_s=late)

    leases = await vt.gather(*(job(i) for i in range(200)))
    times = [lease.granted_at for lease in leases]
    assert len({lease.lease_id for lease in leases}) == 200
    assert max_in_any_window(times, [1] * 200, config.window_s) <= 25
    # and the pace is the quota's, not a crawl: after the burst's first grants, one grant a
    # slot (0.5 s / 24.5); virtual time starves no host, so no slot may be missed
    slot = config.window_s / (25 * config.target)
    assert max(times) - min(times) < (200 - burst) * slot + 0.1
    assert holds.n > 0  # the in-process hold took part


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
    vt = VirtualTime()
    limiters = [RedisLimiter(config, c, clock=vt.clock, sleep=vt.sleep) for c in clients]

    async def job(i: int) -> Lease:
        rng = random.Random(100 + i)
        limiter = limiters[i % len(limiters)]
        audio = rng.uniform(1, 12)
        lease = await acquire_eventually(
            vt, limiter, ASR_MODEL, f"asr-{i}", audio_s=audio, late_s=lambda: rng.uniform(0, 0.02)
        )
        await limiter.release(lease, usage={"total_tokens": lease.tokens}, latency_s=0.01)
        return lease

    leases = await vt.gather(*(job(i) for i in range(40)))
    times = [lease.granted_at for lease in leases]
    span = config.window_s + config.guard_margin_s
    assert max_in_any_window(times, [lease.tokens for lease in leases], span) <= 800
    assert max_in_any_window(times, [1] * len(leases), span) <= 20
    assert all(lease.tokens > 21 for lease in leases)


@pytest.mark.parametrize("hold", [False, True])
async def test_back_to_back_calls_are_spaced_evenly(redis: ArqRedis, hold: bool) -> None:
    clock = Clock()
    limiter = RedisLimiter(SECONDS, redis, clock=clock, sleep=clock.sleep if hold else None)
    first = await limiter.acquire(TTS_MODEL, job_id="a")
    waits = [await outcome(limiter, job_id) for job_id in ("b", "c", "d")]
    # slots 1 s apart: each newcomer is told to come back one slot after the previous one;
    # with the hold on, hold_s before it (to wait the rest in-process)
    early = SECONDS.hold_s if hold else 0.0
    assert waits == [deferred("ticket", w - early) for w in (1.0, 2.0, 3.0)]
    assert first.granted_at == T0 and clock.sleeps == []


async def test_a_dead_workers_lease_expires(redis: ArqRedis) -> None:
    clock = Clock()
    limiter = RedisLimiter(replace(ROOMY, max_in_flight=2, lease_ttl_s=0.3), redis, clock=clock)
    for i in range(2):
        await limiter.acquire(TTS_MODEL, job_id=f"dead-{i}")
    # ...and the worker holding them is killed: nobody will ever release them
    assert (await limiter.snapshot(TTS_MODEL)).in_flight == 2
    seen = []
    for after in (0.0, 0.299, 0.301):
        clock.now = T0 + after
        seen.append(await outcome(limiter, "next"))
    # no latency measured yet: while full, one call ends about every 1 s / 2 calls
    assert seen == [("in_flight", 0.5), ("in_flight", 0.5), ("granted", T0 + 0.301)]


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


@pytest.mark.slow  # a Python process that imports mimoq
async def test_a_killed_worker_process_gives_its_lease_back(
    redis_server: RedisServer, redis: ArqRedis
) -> None:
    """The holder is a real process on Redis TIME; this side reads the lease on a clock
    set before and after the lease's expiry instead of waiting for it."""
    ttl_s = 30.0
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
    clock = Clock(now=held_at)
    limiter = RedisLimiter(config, redis, clock=clock)
    assert (await limiter.snapshot(TTS_MODEL)).in_flight == 1
    seen = []
    for after in (0.0, ttl_s - 0.001, ttl_s + 0.001):
        clock.now = held_at + after
        seen.append((await outcome(limiter, "next"))[0])
    assert seen == ["in_flight", "in_flight", "granted"]


async def test_release_frees_the_in_flight_slot_at_once(redis: ArqRedis) -> None:
    limiter = RedisLimiter(replace(ROOMY, max_in_flight=1), redis, clock=Clock())
    lease = await limiter.acquire(TTS_MODEL, job_id="one")
    with pytest.raises(CapacityDeferred, match="in_flight"):
        await limiter.acquire(TTS_MODEL, job_id="two")
    await limiter.release(lease, usage=None, latency_s=2.5)
    await limiter.acquire(TTS_MODEL, job_id="two")  # at the same instant
    snapshot = await limiter.snapshot(TTS_MODEL)
    assert snapshot.in_flight == 1 and snapshot.latency_ewma_s == 2.5


async def test_the_sets_keyed_by_lease_are_never_listpacks(redis: ArqRedis) -> None:
    # A listpack keeps each score as text and parses every one it passes: the hard guard's
    # count over the grant log, and each grant's insert into it, parsed about a window of
    # 17-digit floats (issue #22). A lease id longer than a listpack's longest value keeps
    # every set and hash keyed by lease a skiplist or a hash table from its first grant.
    limiter = RedisLimiter(ROOMY, redis, clock=Clock())
    for i in range(3):
        await limiter.acquire(ASR_MODEL, job_id=f"job-{i}", audio_s=2.0)
    keys = dict(zip(KEY_PARTS, limiter_keys("acct", ASR_MODEL), strict=True))
    encodings = {
        part: (await redis.object("encoding", keys[part])).decode()
        for part in ("log", "ilog", "leases", "tokens")
    }
    assert encodings == {
        "log": "skiplist", "ilog": "skiplist", "leases": "skiplist", "tokens": "hashtable",
    }  # fmt: skip


async def test_a_429_pauses_every_worker_on_that_model_only(clients: list[ArqRedis]) -> None:
    config = replace(ROOMY, cooldown_s=5.0)
    clock = Clock()
    reporter = RedisLimiter(config, clients[0], clock=clock)
    other = RedisLimiter(config, clients[1], clock=clock)
    await other.acquire(TTS_MODEL, job_id="before")
    await reporter.rate_limited(TTS_MODEL, retry_after_s=1.5)
    assert await outcome(other, "after") == deferred("cooldown", 1.5)
    await other.acquire(ASR_MODEL, job_id="asr", audio_s=4)
    await other.acquire(VOICECLONE_MODEL, job_id="clone")
    clock.now += 0.5
    snapshot = await other.snapshot(TTS_MODEL)
    # the first 429 after a clean history steps down by first_decrease
    assert snapshot.rate_factor == config.first_decrease
    assert snapshot.cooldown_remaining_s == pytest.approx(1.0)
    assert snapshot.requests_effective == pytest.approx(100_000 * 0.98 * config.first_decrease)
    assert (await other.snapshot(ASR_MODEL)).rate_factor == 1.0


async def test_the_default_pause_applies_without_retry_after(redis: ArqRedis) -> None:
    limiter = RedisLimiter(replace(ROOMY, cooldown_s=3.0), redis, clock=Clock())
    await limiter.rate_limited(TTS_MODEL, None)
    assert await outcome(limiter, "x") == deferred("cooldown", 3.0)


async def test_429s_of_one_episode_step_the_rate_down_once(redis: ArqRedis) -> None:
    config = replace(ROOMY, cooldown_s=2.0)
    clock = Clock()
    limiter = RedisLimiter(config, redis, clock=clock)
    for _ in range(5):  # every call in flight comes back 429 at about the same time
        await limiter.rate_limited(TTS_MODEL, None)
        clock.now += 0.01
    snapshot = await limiter.snapshot(TTS_MODEL)
    assert snapshot.rate_factor == config.first_decrease and snapshot.rate_limited_total == 5
    await limiter.rate_limited(TTS_MODEL, 4.0)  # a later Retry-After lengthens the pause
    snapshot = await limiter.snapshot(TTS_MODEL)
    assert snapshot.rate_factor == config.first_decrease
    assert snapshot.cooldown_remaining_s == pytest.approx(4.0)


async def test_the_rate_recovers_additively_to_the_target(redis: ArqRedis) -> None:
    config = LimiterConfig(
        account="acct", window_s=1.0, recovery_per_window=0.5, decrease=0.5, first_decrease=0.5
    )
    clock = Clock()
    limiter = RedisLimiter(config, redis, clock=clock)
    await limiter.rate_limited(TTS_MODEL, 0.0)
    seen = []
    for after in (0.0, 0.25, 0.5, 0.9, 1.0, 3.0):
        clock.now = T0 + after
        seen.append((await limiter.snapshot(TTS_MODEL)).rate_factor)
    # gradual, not a jump: +0.5 a window from the halved rate, capped at the target
    assert seen == pytest.approx([0.5, 0.625, 0.75, 0.95, 1.0, 1.0], abs=1e-4)


async def seconds_ahead(
    redis: ArqRedis, config: LimiterConfig, model: str, now: float, *jobs: str
) -> list[float]:
    """Where each job's reserved slot lies, in seconds from ``now`` (0: the slot's time)."""
    slots = [await slot_of(redis, config.account, model, job) for job in jobs]
    assert None not in slots, dict(zip(jobs, slots, strict=True))  # each holds a ticket
    return [at - now for at in slots if at is not None]


async def wait_of(
    limiter: RedisLimiter, model: str, job_id: str, audio_s: float | None = None
) -> float:
    with pytest.raises(CapacityDeferred) as caught:
        await limiter.acquire(model, job_id=job_id, audio_s=audio_s)
    assert caught.value.retry_after_s is not None
    return caught.value.retry_after_s


async def test_a_429_moves_the_queue_behind_the_pause_at_the_lower_rate(redis: ArqRedis) -> None:
    config = replace(SECONDS, decrease=0.5, first_decrease=0.5)
    limiter = RedisLimiter(config, redis, clock=Clock())
    await limiter.acquire(TTS_MODEL, job_id="first")
    queue = ("q1", "q2", "q3")
    before = [await wait_of(limiter, TTS_MODEL, j) for j in queue]
    await limiter.rate_limited(TTS_MODEL, 10.0)
    after = await seconds_ahead(redis, config, TTS_MODEL, T0, *queue)
    assert before == [ms(1.0), ms(2.0), ms(3.0)]
    # the queue keeps its order, starts after the pause, and is spaced for half the rate
    assert after == pytest.approx([10.0, 12.0, 14.0], abs=1e-9)
    newcomer = await wait_of(limiter, TTS_MODEL, "q4")
    assert await seconds_ahead(redis, config, TTS_MODEL, T0, "q4") == pytest.approx([16.0])
    # a slot more than a window ahead is a place in the queue: its holder comes back
    # half-way there, to read it again
    assert newcomer == ms(8.0)
    assert await wait_of(limiter, TTS_MODEL, "q1") == ms(10.0)


async def test_a_429_restarts_the_queue_once_the_guard_has_room_at_the_lower_rate(
    redis: ArqRedis,
) -> None:
    """The window still holds the old rate's grants: the queue restarts once enough of them
    have left it for the lower rate's cap, not at the pause's end, where the guard held
    each holder back and sent it to the schedule's end, out of its order."""
    clock = Clock()
    limiter = RedisLimiter(SECONDS, redis, clock=clock)
    for k in range(10):  # the whole quota: a grant a second
        clock.now = T0 + k
        assert await outcome(limiter, f"g{k}") == granted(T0 + k)
    clock.now = T0 + 9.5
    queue = ("q1", "q2")
    for job_id in queue:
        await wait_of(limiter, TTS_MODEL, job_id)
    assert await seconds_ahead(redis, SECONDS, TTS_MODEL, T0, *queue) == pytest.approx([10, 11])
    await limiter.rate_limited(TTS_MODEL, 0.5)  # paused until T0 + 10, the rate x 0.9
    guard = SECONDS.window_s + (await limiter.snapshot(TTS_MODEL)).guard_margin_s
    # the cap is 9 now: the grants at T0 and T0 + 1 must leave the window first
    after = await seconds_ahead(redis, SECONDS, TTS_MODEL, T0, *queue)
    assert after == pytest.approx([1 + guard, 1 + guard + 1 / 0.9], abs=1e-9)
    clock.now = T0 + 1 + guard
    assert await outcome(limiter, "q1") == granted(clock.now)


async def test_the_queue_is_respaced_when_the_token_estimate_is_calibrated(
    redis: ArqRedis,
) -> None:
    """Tickets queued at the uncalibrated estimate would keep their too-wide spacing until
    the queue drained (measured: 58 % of the token quota with a backlog); once the estimate
    moved by more than 5 %, the queue is spaced for the new one."""
    config = LimiterConfig(
        account="acct", window_s=10.0, default_rpm=1000, target=1.0, tpm={ASR_MODEL: 1000}
    )  # 10 ms a token
    limiter = RedisLimiter(config, redis, clock=Clock())
    first = await limiter.acquire(ASR_MODEL, job_id="first", audio_s=10.0)
    assert first.tokens == 21 + 113  # 11.25 tokens a second, uncalibrated
    queue = ("q1", "q2", "q3")
    for job in queue:
        await wait_of(limiter, ASR_MODEL, job, audio_s=10.0)
    spaced = await seconds_ahead(redis, config, ASR_MODEL, T0, *queue)
    assert spaced == pytest.approx([1.34, 2.68, 4.02], abs=1e-9)
    # the call really cost 5 tokens a second: the estimate moves to 10.0 (EWMA), 11 % off
    await limiter.release(first, usage={"total_tokens": 21 + 50}, latency_s=1.0)
    assert (await limiter.snapshot(ASR_MODEL)).tokens_per_audio_s == pytest.approx(10.0)
    respaced = await seconds_ahead(redis, config, ASR_MODEL, T0, *queue)
    # the head keeps its slot, the rest are spaced for 21 + 100 tokens
    assert respaced == pytest.approx([1.34, 2.55, 3.76], abs=1e-9)
    q4 = await wait_of(limiter, ASR_MODEL, "q4", audio_s=10.0)
    assert q4 == ms(3.76 + 1.21)  # the schedule's end moved too


#: 0.1 s slots; 0.2 s at half the rate, regained within a window after a first 429
RECOVERING = LimiterConfig(
    account="acct",
    window_s=1.0,
    default_rpm=10,
    target=1.0,
    decrease=0.5,
    first_decrease=0.5,
    recovery_per_window=0.25,
    ticket_grace_s=60,
)


async def queued_after_a_429(redis: ArqRedis, clock: Clock) -> tuple[RedisLimiter, list[str]]:
    """A limiter on ``RECOVERING`` just after a 429, with 40 jobs queued at half the rate
    (the recovery is a function of ``clock``, not of sleeping)."""
    limiter = RedisLimiter(RECOVERING, redis, clock=clock)
    await limiter.rate_limited(TTS_MODEL, 0.0)
    await limiter.acquire(TTS_MODEL, job_id="first")
    queue = [f"q{i}" for i in range(40)]
    for job in queue:
        await wait_of(limiter, TTS_MODEL, job)
    return limiter, queue


async def test_the_queue_is_respaced_as_the_rate_recovers_after_a_429(redis: ArqRedis) -> None:
    config, clock = RECOVERING, Clock()
    limiter, queue = await queued_after_a_429(redis, clock)
    spaced = await seconds_ahead(redis, config, TTS_MODEL, clock.now, *queue)
    assert spaced[-1] - spaced[-2] == pytest.approx(0.2, abs=0.015)
    clock.now += 1.0  # a window later the rate has regained its step (a clean history)
    assert (await limiter.snapshot(TTS_MODEL)).rate_factor >= 0.9
    await wait_of(limiter, TTS_MODEL, "newcomer")  # any decision notices the drift
    respaced = await seconds_ahead(redis, config, TTS_MODEL, clock.now, *queue)
    assert respaced[-1] - respaced[-2] < 0.1 / 0.85
    assert respaced == sorted(respaced)  # same order


async def test_a_recovering_rate_never_moves_a_ticket_later(redis: ArqRedis) -> None:
    # Holders back late leave the schedule's head overdue: a re-plan anchored at now moved
    # every ticket later by as much, and every holder already waiting in its worker for
    # its slot asked too early and had to ask again.
    config, clock = RECOVERING, Clock()
    start = clock.now
    limiter, queue = await queued_after_a_429(redis, clock)
    before = await seconds_ahead(redis, config, TTS_MODEL, start, *queue)
    clock.now += 1.0  # nobody came back meanwhile: the first tickets are overdue
    assert before[0] < 1.0
    factor = (await limiter.snapshot(TTS_MODEL)).rate_factor
    await wait_of(limiter, TTS_MODEL, "newcomer")  # a decision notices the drift
    after = await seconds_ahead(redis, config, TTS_MODEL, start, *queue)
    assert all(new <= old + 1e-6 for new, old in zip(after, before, strict=True))
    assert after[-1] < before[-1] - 1.0  # the tail did move up, at the faster rate
    slot = 0.1 / factor
    assert all(b - a >= slot - 1e-6 for a, b in itertools.pairwise(after))


async def test_asr_token_estimate_converges_to_the_observed_rate(redis: ArqRedis) -> None:
    config = replace(ROOMY, tpm={ASR_MODEL: 10**9})
    clock = Clock()
    limiter = RedisLimiter(config, redis, clock=clock)
    # uncalibrated: the documented 4 s clip costs 46 prompt + 20 completion tokens
    first = await limiter.acquire(ASR_MODEL, job_id="clip-0", audio_s=4.0)
    assert first.tokens == 66
    rng = random.Random(3)
    true_rate = 20.0  # this account's audio really costs 20 tokens a second
    lease = first
    for i in range(1, 31):
        actual = round(21 + true_rate * lease.audio_s) if lease.audio_s else 0
        await limiter.release(lease, usage={"total_tokens": actual}, latency_s=1.0)
        clock.now += 1.0
        lease = await limiter.acquire(ASR_MODEL, job_id=f"clip-{i}", audio_s=rng.uniform(2, 30))
    snapshot = await limiter.snapshot(ASR_MODEL)
    assert snapshot.tokens_per_audio_s == pytest.approx(true_rate, rel=0.02)
    # the lengths vary: the tokens besides the audio's are fitted too, and meet the 21
    assert snapshot.tokens_per_call == pytest.approx(21, abs=1.5)
    assert lease.audio_s is not None
    assert lease.tokens == pytest.approx(21 + true_rate * lease.audio_s, rel=0.02)


async def test_usage_reconciles_the_tokens_counted_in_the_window(redis: ArqRedis) -> None:
    config = replace(ROOMY, tpm={ASR_MODEL: 300})
    limiter = RedisLimiter(config, redis, clock=Clock())
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
    limiter = RedisLimiter(replace(ROOMY, tpm={ASR_MODEL: 10**6}), redis, clock=Clock())
    unknown = await limiter.acquire(ASR_MODEL, job_id="u")
    short = await limiter.acquire(ASR_MODEL, job_id="s", audio_s=4.0)
    assert unknown.tokens > 10 * short.tokens
    assert (await limiter.acquire(TTS_MODEL, job_id="t", audio_s=4.0)).tokens == 0


@pytest.mark.parametrize("hold", [False, True])
async def test_a_deferred_job_is_served_before_newer_arrivals(redis: ArqRedis, hold: bool) -> None:
    config = LimiterConfig(account="acct", window_s=2.0, default_rpm=5)  # slots ~0.4 s apart
    vt = VirtualTime()
    limiter = RedisLimiter(config, redis, clock=vt.clock, sleep=vt.sleep if hold else None)
    await limiter.acquire(TTS_MODEL, job_id="first")
    with pytest.raises(CapacityDeferred) as caught:
        await limiter.acquire(TTS_MODEL, job_id="old")
    old_back_in = caught.value.retry_after_s
    assert old_back_in is not None
    grants: dict[str, float] = {}

    async def impatient(job_id: str) -> None:
        # newer jobs ignore what they are told and ask again every 10 ms
        deadline = vt.clock() + 10
        while vt.clock() < deadline:
            try:
                grants[job_id] = (await limiter.acquire(TTS_MODEL, job_id=job_id)).granted_at
                return
            except CapacityDeferred:
                await vt.sleep(0.01)
        raise AssertionError(f"{job_id} never granted")

    async def old_job() -> None:
        await vt.sleep(old_back_in)  # the deferral, as arq would run it
        grants["old"] = (await limiter.acquire(TTS_MODEL, job_id="old")).granted_at

    await vt.gather(old_job(), *(impatient(f"new-{i}") for i in range(4)))
    newer = [t for job, t in grants.items() if job != "old"]
    # the old job got in on its first return (old_job does not retry), ahead of them all
    assert len(newer) == 4 and grants["old"] < min(newer)


async def test_unclaimed_tickets_expire(redis: ArqRedis) -> None:
    config = LimiterConfig(account="acct", window_s=1.0, default_rpm=10, ticket_grace_s=0.2)
    clock = Clock()
    limiter = RedisLimiter(config, redis, clock=clock)
    await limiter.acquire(TTS_MODEL, job_id="first")
    jobs = ("gone-1", "gone-2")
    for job_id in jobs:
        with pytest.raises(CapacityDeferred):
            await limiter.acquire(TTS_MODEL, job_id=job_id)
    snapshot = await limiter.snapshot(TTS_MODEL)
    assert snapshot.tickets == 2 and snapshot.ticket_backlog_s > 0
    slot_1, slot_2 = await seconds_ahead(redis, config, TTS_MODEL, 0.0, *jobs)
    left = []
    for at in (slot_1, slot_1 + 0.199, slot_1 + 0.201, slot_2 + 0.199, slot_2 + 0.201):
        clock.now = at
        left.append((await limiter.snapshot(TTS_MODEL)).tickets)
    # each ticket is dropped once its slot is ticket_grace_s past, not before
    assert left == [2, 2, 1, 1, 0]
    # a job back after its ticket expired is a new arrival: the schedule is free again
    assert await outcome(limiter, "gone-1") == ("granted", clock.now)
    assert not await schedule(redis, "acct", TTS_MODEL)


async def test_redis_keys_carry_the_prefix_and_no_secret(redis: ArqRedis) -> None:
    settings = Settings(mimo={"key": "sk-very-secret-key"}, limiter={"burst": 10})
    built = build_limiter(settings, redis)
    assert isinstance(built, RedisLimiter)
    # the same limiter on an injected clock
    limiter = RedisLimiter(built.config, redis, clock=Clock())
    lease = await limiter.acquire(ASR_MODEL, job_id="job", audio_s=3.0)
    await limiter.release(lease, usage={"total_tokens": 50}, latency_s=0.5)
    await limiter.rate_limited(ASR_MODEL, None)
    keys = [k.decode() async for k in redis.scan_iter("*")]
    # the limiter's keys, and the granted job's cancel marker (docs/cancel.md)
    assert keys and all(k.startswith(wire.LIMITER_PREFIX) for k in keys if k != "mimoq:cancel:job")
    assert await redis.get(wire.cancel_key("job")) == b"granted"
    for key in keys:
        assert "secret" not in key
        assert await redis.ttl(key) > 0  # idle limiters do not live forever
    assert "secret" not in repr(lease)
    assert "secret" not in repr(built.__dict__) and "secret" not in repr(limiter.__dict__)


async def test_key_ttls_are_refreshed_once_a_minute_not_on_every_decision(
    redis: ArqRedis,
) -> None:
    clock = Clock()
    limiter = RedisLimiter(replace(SECONDS, default_rpm=1000), redis, clock=clock)
    lease = await limiter.acquire(TTS_MODEL, job_id="first")
    await limiter.release(lease, usage={}, latency_s=0.5)
    keys = [k async for k in redis.scan_iter(wire.LIMITER_PREFIX + "*")]
    assert keys and all([await redis.ttl(k) > 0 for k in keys])
    # keys that lost their TTL (as a zset emptied and created again would) keep none while
    # decisions follow each other within the refresh interval: no EXPIRE per decision
    for key in keys:
        await redis.persist(key)
    for i in range(5):
        clock.now += 1.0
        lease = await limiter.acquire(TTS_MODEL, job_id=f"soon-{i}")
        await limiter.release(lease, usage={}, latency_s=0.5)
    assert all([await redis.ttl(k) == -1 for k in keys])
    # the first decision a minute after the last refresh gives every key its TTL again
    clock.now += 60.0
    await limiter.acquire(TTS_MODEL, job_id="later")
    keys = [k async for k in redis.scan_iter(wire.LIMITER_PREFIX + "*")]
    assert all([await redis.ttl(k) > 0 for k in keys])


async def test_disabled_limits_grant_everything(redis: ArqRedis) -> None:
    limiter = build_limiter(Settings(limiter={"enabled": False}), redis)
    assert isinstance(limiter, UnlimitedLimiter)
    leases = [await limiter.acquire(TTS_MODEL, job_id=str(i)) for i in range(500)]
    await limiter.rate_limited(TTS_MODEL, 10)
    await limiter.acquire(TTS_MODEL, job_id="after-429")
    for lease in leases:
        await limiter.release(lease, usage=None, latency_s=None)
    # nothing is remembered but each grant's cancel marker (docs/cancel.md), which expires
    keys = [k.decode() async for k in redis.scan_iter("*")]
    assert sorted(keys) == sorted(wire.cancel_key(j) for j in [*map(str, range(500)), "after-429"])
    for key in keys[:5]:
        assert 0 < await redis.ttl(key) <= LimiterConfig.from_settings(Settings()).lease_ttl_s


async def test_disabled_limits_still_refuse_a_cancelled_job(redis: ArqRedis) -> None:
    limiter = build_limiter(Settings(limiter={"enabled": False}), redis)
    await redis.set(wire.cancel_key("gone"), "cancelled")
    with pytest.raises(JobCancelled):
        await limiter.acquire(TTS_MODEL, job_id="gone")


@pytest.mark.parametrize("tenant", [None, "acme"])
async def test_disabled_limits_send_a_tenants_17th_interactive_job_straight_on(
    redis: ArqRedis, tenant: str | None
) -> None:
    """A granted interactive job leaves its tenant's admitted set with limits off too: one
    job after another, none waits for an admission round (the 17th used to, ~1 s each)."""
    limiter = build_limiter(Settings(limiter={"enabled": False}), redis)
    enqueue = redis.register_script(wire.enqueue_script())
    for i in range(wire.INTERACTIVE_DIRECT + 4):
        job: dict[str, Any] = {"kind": "speech", "input": "hi", "tenant": tenant}
        assert await enqueue(keys=wire.enqueue_keys(f"j{i}"), args=[f"j{i}", json.dumps(job)])
        assert await redis.zscore(wire.QUEUE_NAME, f"j{i}") is not None, f"job {i} waits"
        await limiter.acquire(TTS_MODEL, job_id=f"j{i}", tenant=tenant)
    assert await redis.zcard(wire.interactive_admitted_key(TTS_MODEL, tenant)) == 0


# The hold: a job told to come back hold_s before its reserved slot waits the rest in the
# worker, with a timer, instead of in arq's queue (a poll late or more on a busy host).


@pytest.mark.parametrize(
    ("early", "sleeps", "expected"),
    [
        (0.0, [], ("granted", T0 + 1.0)),  # on time
        (0.0015, [], ("granted", T0 + 0.9985)),  # within the scripts' 2 ms tolerance
        (0.1, [0.1], ("granted", T0 + 1.0)),
        (0.25, [0.25], ("granted", T0 + 1.0)),  # exactly hold_s ahead still holds
        (0.3, [], ("ticket", 0.05)),  # too early: back hold_s before the slot, again
        (0.9, [], ("ticket", 0.65)),
    ],
)
async def test_a_ticket_holder_back_early_waits_for_its_slot_only_within_hold(
    redis: ArqRedis, early: float, sleeps: list[float], expected: tuple[str, float]
) -> None:
    clock = Clock()
    limiter = RedisLimiter(SECONDS, redis, clock=clock, sleep=clock.sleep)
    assert await outcome(limiter, "first") == ("granted", T0)
    # the slot is 1 s away: come back hold_s before it
    assert await outcome(limiter, "held") == deferred("ticket", 0.75)
    clock.now = T0 + 1.0 - early
    assert await outcome(limiter, "held") == expect(*expected)
    assert clock.sleeps == pytest.approx(sleeps, abs=1e-9)


async def test_a_new_job_whose_slot_is_within_hold_waits_for_it(redis: ArqRedis) -> None:
    clock = Clock()
    await RedisLimiter(SECONDS, redis, clock=clock).acquire(TTS_MODEL, job_id="first")
    clock.now = T0 + 0.8  # the next free slot is 0.2 s away
    limiter = RedisLimiter(SECONDS, redis, clock=clock, sleep=clock.sleep)
    assert await outcome(limiter, "new") == granted(T0 + 1.0)
    assert clock.sleeps == pytest.approx([0.2], abs=1e-9)


@pytest.mark.parametrize(
    ("pause", "sleeps", "expected"),
    [
        (0.2, [0.2], ("granted", T0 + 0.2)),
        (1.0, [], ("cooldown", 0.75)),  # back hold_s before the pause ends
    ],
)
async def test_a_pause_ending_within_hold_is_waited_for(
    redis: ArqRedis, pause: float, sleeps: list[float], expected: tuple[str, float]
) -> None:
    clock = Clock()
    limiter = RedisLimiter(SECONDS, redis, clock=clock, sleep=clock.sleep)
    await limiter.rate_limited(TTS_MODEL, pause)
    assert await outcome(limiter, "x") == expect(*expected)
    assert clock.sleeps == pytest.approx(sleeps, abs=1e-9)


async def test_share_and_in_flight_decisions_never_hold(clients: list[ArqRedis]) -> None:
    """They reserve no slot: the job asks again after the wait, in full, however short
    (a hold_s of 5 s would hold any slot-holding decision here, as the last lines show)."""
    config = LimiterConfig(account="acct", window_s=1.0, default_rpm=10, target=1.0, hold_s=5.0)
    clock = Clock()
    setup = RedisLimiter(config, clients[0], clock=clock)  # no hold
    limiter = RedisLimiter(config, clients[1], clock=clock, sleep=clock.sleep)
    # share: two bulk tickets, taken over by two interactive jobs (the bulk lane's share
    # of 0.5 allows it), and a third interactive job over its share
    await setup.acquire(TTS_MODEL, job_id="b0", lane="bulk")
    for job_id, lane in [
        ("b1", "bulk"),
        ("b2", "bulk"),
        ("i1", "interactive"),
        ("i2", "interactive"),
    ]:
        assert (await outcome(setup, job_id, lane=lane))[0] == "ticket"
    # ...asks again when the schedule (b0, i1, i2, b1, b2: 0.5 s) has run
    assert await outcome(limiter, "i3") == deferred("share", 0.5)
    # in_flight: the cap of calls in flight (1) is reached; calls take 0.1 s
    capped = RedisLimiter(replace(ROOMY, max_in_flight=1, hold_s=5.0), clients[2], clock=clock)
    lease = await capped.acquire(VOICECLONE_MODEL, job_id="a")
    await capped.release(lease, usage=None, latency_s=0.1)
    await capped.acquire(VOICECLONE_MODEL, job_id="b")
    held_capped = RedisLimiter(capped.config, clients[3], clock=clock, sleep=clock.sleep)
    assert await outcome(held_capped, "c", model=VOICECLONE_MODEL) == deferred("in_flight", 0.1)
    assert clock.sleeps == [] and clock.now == T0
    # ...while the interactive ticket 0.1 s away is held for
    assert await outcome(limiter, "i1") == granted(T0 + 0.1)
    assert clock.sleeps == pytest.approx([0.1], abs=1e-9)


async def test_at_most_max_holds_then_a_deferral(redis: ArqRedis) -> None:
    """A slot that keeps receding while its job waits (here: each hold moves the clock
    only half-way) is not chased: after MAX_HOLDS waits the job is deferred."""
    clock = Clock()
    await RedisLimiter(SECONDS, redis, clock=clock).acquire(TTS_MODEL, job_id="first")
    assert (await outcome(RedisLimiter(SECONDS, redis, clock=clock), "held"))[0] == "ticket"
    clock.now, clock.moves = T0 + 0.8, 0.5
    limiter = RedisLimiter(SECONDS, redis, clock=clock, sleep=clock.sleep)
    decision, retry = await outcome(limiter, "held")
    assert MAX_HOLDS == 3 and clock.sleeps == pytest.approx([0.2, 0.1, 0.05], abs=1e-9)
    # still holding its ticket, told to come back at the slot itself (not early again,
    # which would start another round of waits at once)
    assert decision == "ticket" and retry == pytest.approx(0.025, abs=0.0011)
    assert await seconds_ahead(redis, SECONDS, TTS_MODEL, T0, "held") == pytest.approx([1.0])


@pytest.mark.parametrize("short_s", [2.4e-7, 0.0015])
async def test_a_pace_wait_of_a_rounding_step_is_served_not_deferred(
    redis: ArqRedis, short_s: float
) -> None:
    # At epoch scale one float step is 2.4e-7 s: the pace once answered "paced, wait
    # 2.4e-7 s", and a fleet on an injected clock put the job back at the same instant forever
    clock = Clock(now=1_796_546_323.2731473)
    limiter = RedisLimiter(SECONDS, redis, clock=clock)
    state = limiter_keys(SECONDS.account, TTS_MODEL)[KEY_PARTS.index("state")]
    per_request = SECONDS.window_s / SECONDS.default_rpm / SECONDS.target
    await redis.hset(state, "ptat", repr(clock.now + 0.75 * per_request + short_s))
    assert await outcome(limiter, "a") == granted(clock.now)


async def test_a_pace_wait_longer_than_the_rounding_is_still_deferred(redis: ArqRedis) -> None:
    clock = Clock(now=1_796_546_323.2731473)
    limiter = RedisLimiter(SECONDS, redis, clock=clock)
    state = limiter_keys(SECONDS.account, TTS_MODEL)[KEY_PARTS.index("state")]
    per_request = SECONDS.window_s / SECONDS.default_rpm / SECONDS.target
    await redis.hset(state, "ptat", repr(clock.now + 0.75 * per_request + 0.1))
    decision, retry_s = await outcome(limiter, "a")
    # a new job holds its ticket for the paced slot
    assert (decision, retry_s) == deferred("ticket", 0.1)


@pytest.mark.parametrize("queued", [True, False])
async def test_a_ticket_holder_queued_hold_s_early_asks_once_at_its_slot(
    redis: ArqRedis, queued: bool
) -> None:
    """A job whose marker says it holds a ticket was queued hold_s before its slot: told
    when its queue place came due (QUEUED_TICKET), acquire waits until the slot and then
    asks, once, and is granted. Without it, the first ask only learns to wait (a second
    decision, about 6 Redis commands)."""
    clock = Clock()
    await RedisLimiter(SECONDS, redis, clock=clock).acquire(TTS_MODEL, job_id="first")
    assert (await outcome(RedisLimiter(SECONDS, redis, clock=clock), "held"))[0] == "ticket"
    clock.now = T0 + 1.0 - SECONDS.hold_s  # arq hands the job over when its place is due
    limiter = RedisLimiter(SECONDS, redis, clock=clock, sleep=clock.sleep)
    if queued:
        QUEUED_TICKET.set(clock.now)
    await redis.config_resetstat()
    assert await outcome(limiter, "held") == granted(T0 + 1.0)
    assert clock.sleeps == pytest.approx([SECONDS.hold_s], abs=1e-9)
    asks = (await redis.info("commandstats"))["cmdstat_fcall"]["calls"]
    assert asks == (1 if queued else 2)
    assert QUEUED_TICKET.get() is None or not queued  # read once


async def test_a_queued_place_far_from_now_is_not_waited_for(redis: ArqRedis) -> None:
    """A place that came due long ago (a stale marker: the ticket was given back) or is
    more than hold_s ahead is not a slot to wait for: the job asks at once."""
    clock = Clock()
    limiter = RedisLimiter(SECONDS, redis, clock=clock, sleep=clock.sleep)
    for ago in (5.0, -0.5):
        QUEUED_TICKET.set(clock.now - ago)
        await limiter.acquire(TTS_MODEL, job_id=f"ago-{ago}")
        clock.now += 1.0
    assert clock.sleeps == []
