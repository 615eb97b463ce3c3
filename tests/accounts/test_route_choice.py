"""The routing decision: soonest account wins, ties stable, paused skipped, routes stick.

``choose_route`` is tabled without Redis; ``Routes`` is then run on the private Redis with fake
limiters whose next free time is set by the test, so every case is exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest
from arq.connections import ArqRedis
from redis.asyncio.client import Pipeline

from mimoq.core import wire
from mimoq.core.dialect_constants import TTS_MODEL
from mimoq.core.errors import CapacityDeferred, PaymentRequiredError
from mimoq.worker.accounts.breaker import PAUSED_SET, Breaker
from mimoq.worker.accounts.route_choice import Route, Routes, affinity, choose_route, soonest
from mimoq.worker.limiter import Limiter, LimiterConfig, RedisLimiter
from tests.support.polling import eventually

A, B, C = "acct-a", "acct-b", "acct-c"
ABC = [A, B, C]


def _tied_winner(key: str) -> str:
    return soonest(ABC, {}, key)


@pytest.mark.parametrize(
    ("case", "route", "paused", "free", "expected"),
    [
        ("soonest wins", None, set(), {A: 3.0, B: 0.5, C: 2.0}, Route(B, new=True)),
        ("a busy account loses to an idle one", None, set(), {A: 0.0, B: 9.0, C: 9.0},
         Route(A, new=True)),
        ("a paused account is skipped", None, {B}, {A: 3.0, B: 0.0, C: 2.0}, Route(C, new=True)),
        ("the route is kept though another is sooner", A, set(), {A: 5.0, B: 0.0, C: 0.0},
         Route(A, new=False)),
        ("a paused route is re-chosen", A, {A}, {A: 0.0, B: 4.0, C: 1.0}, Route(C, new=True)),
        ("a route to an account no longer configured is re-chosen", "gone", set(),
         {A: 1.0, B: 0.0, C: 1.0}, Route(B, new=True)),
        ("all paused: the route stays (its breaker decides)", A, {A, B, C}, {B: 0.0},
         Route(A, new=False)),
    ],
)  # fmt: skip
def test_decide(
    case: str, route: str | None, paused: set[str], free: dict[str, float], expected: Route
) -> None:
    assert (
        choose_route(ABC, key="job-1", route=route, paused=paused, next_free_s=free) == expected
    ), case


def test_all_paused_without_a_route_still_picks_one() -> None:
    got = choose_route(
        ABC, key="job-1", route=None, paused=set(ABC), next_free_s={A: 1, B: 0, C: 2}
    )
    assert got == Route(B, new=True)


def test_ties_are_stable_and_spread_by_the_job() -> None:
    # Equal (and within a millisecond of equal) accounts: the same job always gets the same
    # one, whatever order the accounts are listed in, and different jobs do not all pile
    # onto one account.
    keys = [f"job-{i}" for i in range(60)]
    for key in keys:
        first = soonest(ABC, {A: 0.2, B: 0.2004, C: 0.2}, key)
        assert soonest(list(reversed(ABC)), {A: 0.2, B: 0.2004, C: 0.2}, key) == first
        assert first == _tied_winner(key)
    assert {_tied_winner(k) for k in keys} == set(ABC)
    # ...but a full millisecond apart is no tie
    assert {soonest(ABC, {A: 0.2, B: 0.2, C: 0.198}, k) for k in keys} == {C}


def test_negative_waits_count_as_free_now() -> None:
    key = next(k for k in (f"j{i}" for i in range(100)) if _tied_winner(k) == A)
    assert soonest(ABC, {A: 0.0, B: -5.0, C: -0.2}, key) == A


class FakeLimiter:
    """Only what routing reads: a next free time the test sets (queued as an ECHO)."""

    def __init__(self, next_free_s: float) -> None:
        self.next_free_s = next_free_s

    def queue_next_free(self, pipe: Pipeline, model: str, *, load: bool = False) -> int:
        pipe.echo(repr(self.next_free_s))
        return 1


def routes_over(
    redis: ArqRedis, free: Mapping[str, float]
) -> tuple[Routes, dict[str, FakeLimiter]]:
    fakes = {name: FakeLimiter(s) for name, s in free.items()}
    limiters: dict[str, Limiter] = dict(fakes)  # type: ignore[arg-type]
    return Routes(redis, limiters, ttl_s=60), fakes


@pytest.mark.redis
async def test_a_new_job_goes_to_the_soonest_account_and_stays_there(redis: ArqRedis) -> None:
    routes, fakes = routes_over(redis, {A: 2.0, B: 0.1, C: 1.0})
    assert (await routes.route("job-1", TTS_MODEL)).account == B
    assert await redis.get(wire.route_key("job-1")) == B.encode()
    assert 0 < await redis.ttl(wire.route_key("job-1")) <= 60
    # B is now the busiest, but the job comes back to B: its ticket is there.
    fakes[B].next_free_s = 30.0
    assert (await routes.route("job-1", TTS_MODEL)).account == B
    # A new job goes elsewhere.
    assert (await routes.route("job-2", TTS_MODEL)).account == C


@pytest.mark.redis
async def test_chunks_follow_their_parent(redis: ArqRedis) -> None:
    routes, fakes = routes_over(redis, {A: 0.0, B: 5.0, C: 5.0})
    assert (await routes.route("book.p000", TTS_MODEL)).account == A
    fakes[A].next_free_s = 60.0
    chunks = [f"book.p{i:03d}" for i in range(1, 8)]
    assert {(await routes.route(c, TTS_MODEL)).account for c in chunks} == {A}
    assert {affinity(c) for c in chunks} == {"book"}
    assert await redis.get(wire.route_key("book")) == A.encode()


@pytest.mark.redis
async def test_routes_use_the_breakers_copy_of_the_paused_set_while_it_keeps_one(
    redis: ArqRedis,
) -> None:
    """With the paused set's copy subscribed (paused_view.py), a route reads no paused set:
    what the copy holds decides, and a trip's message updates it."""
    limiters: dict[str, Limiter] = {A: FakeLimiter(0.0), B: FakeLimiter(3.0)}  # type: ignore[dict-item]
    breaker = Breaker(redis, probe_base_s=30, probe_max_s=300, pause_max_s=3600, trip_429s=5)
    routes = Routes(redis, limiters, ttl_s=60, paused=breaker.paused_view)
    watcher = asyncio.create_task(breaker.paused_view.watch())
    try:
        await eventually(lambda: breaker.paused_view.known() == frozenset(), what="the copy")
        # a write nobody announced is not read per call (the heartbeat's refresh finds it)
        await redis.sadd(PAUSED_SET, A)
        assert (await routes.route("job-v1", TTS_MODEL)).account == A
        await redis.srem(PAUSED_SET, A)
        # a trip is announced: the next route moves off the account
        await breaker.trip(A, PaymentRequiredError("out of funds", status=402))
        await eventually(lambda: breaker.paused_view.known() == {A}, what="the trip")
        routed = await routes.route("job-v2", TTS_MODEL)
        assert (routed.account, routed.paused) == (B, frozenset({A}))
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


@pytest.mark.redis
async def test_a_paused_route_moves_to_the_soonest_unpaused_account(redis: ArqRedis) -> None:
    routes, _ = routes_over(redis, {A: 0.0, B: 3.0, C: 1.0})
    assert (await routes.route("job-1", TTS_MODEL)).account == A
    await redis.sadd(PAUSED_SET, A)
    routed = await routes.route("job-1", TTS_MODEL)
    assert (routed.account, routed.paused) == (C, frozenset({A}))
    # The new route holds after the pause ends: the job does not move back.
    await redis.srem(PAUSED_SET, A)
    assert (await routes.route("job-1", TTS_MODEL)).account == C


@pytest.mark.redis
async def test_a_route_written_meanwhile_wins(redis: ArqRedis) -> None:
    # Two chunks re-choosing at once must agree: the second follows the first's choice
    # instead of overwriting it (compare-and-set against the route it read).
    routes, _ = routes_over(redis, {A: 0.0, B: 1.0, C: 1.0})

    class Racer(FakeLimiter):
        def queue_next_free(self, pipe: Pipeline, model: str, *, load: bool = False) -> int:
            # Another worker records its choice between our read and our write.
            pipe.set(wire.route_key("book"), C)
            pipe.echo(repr(self.next_free_s))
            return 2

    racing = Routes(redis, {A: Racer(0.0), B: FakeLimiter(1.0), C: FakeLimiter(1.0)}, ttl_s=60)  # type: ignore[dict-item]
    assert (await racing.route("book.p001", TTS_MODEL)).account == C
    assert (await routes.route("book.p002", TTS_MODEL)).account == C


@pytest.mark.redis
async def test_routing_reads_real_limiters_and_survives_a_script_flush(redis: ArqRedis) -> None:
    now = [1000.0]
    config = LimiterConfig(account=A, window_s=10, default_rpm=10)  # one slot per second
    busy = RedisLimiter(config, redis, clock=lambda: now[0])
    idle = RedisLimiter(LimiterConfig(account=B, window_s=10, default_rpm=10), redis,
                        clock=lambda: now[0])  # fmt: skip
    await busy.acquire(TTS_MODEL, job_id="held-0")
    for i in (1, 2):  # one grant, two tickets: A's next slot is ~3 s away
        with pytest.raises(CapacityDeferred):
            await busy.acquire(TTS_MODEL, job_id=f"held-{i}")
    assert await busy.next_free_s(TTS_MODEL) == pytest.approx(3 * 10 / (10 * 0.98), abs=1e-6)
    await redis.script_flush()  # Redis restarted: every script must be loaded again
    routes = Routes(redis, {A: busy, B: idle}, ttl_s=60)
    assert (await routes.route("new-job", TTS_MODEL)).account == B
    await redis.script_flush()
    assert await idle.next_free_s(TTS_MODEL) == 0.0
