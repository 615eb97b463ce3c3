"""The pace's tolerance of the holders' jitter (core/scripts/limiter_acquire.lua, pace_wait):
where ticket holders come back later than 3/4 of a slot (slots of a few milliseconds, a
busy host), the tolerance is their measured lateness, up to 50 ms; never a stall's.
Real Redis, the real scripts, an injected clock."""

from __future__ import annotations

import pytest
from arq.connections import ArqRedis

from mimoq.core.dialect_constants import TTS_MODEL
from mimoq.worker.limiter import LimiterConfig, RedisLimiter
from mimoq.worker.limiter.config import KEY_PARTS, limiter_keys
from tests.worker.test_limiter import SECONDS, T0, Clock, deferred, granted, outcome

pytestmark = pytest.mark.redis

#: A quota compressed to slots of 2.55 ms (400 a second at the target 0.98), as the
#: Redis cost bench's.
FAST = LimiterConfig(account="acct", window_s=1.0, default_rpm=400, hold_s=0.25)
PER_REQUEST = FAST.window_s / FAST.default_rpm / FAST.target
#: How far past 3/4 of a slot the pace's next grant is, in the tables below.
AHEAD_S = 0.010


def _state_key() -> str:
    return limiter_keys("acct", TTS_MODEL)[KEY_PARTS.index("state")]


async def _ask_paced(redis: ArqRedis, late: dict[str, str]) -> tuple[str, float]:
    """A new job's ask while the pace's next grant is AHEAD_S past the tolerance of 3/4 of
    a slot, the holders' lateness being ``late`` (state fields)."""
    clock = Clock()
    ptat = clock.now + 0.75 * PER_REQUEST + AHEAD_S
    await redis.hset(_state_key(), mapping={"ptat": repr(ptat), **late})
    return await outcome(RedisLimiter(FAST, redis, clock=clock), "next")


async def test_without_measured_lateness_the_pace_holds_3_4_of_a_slot(redis: ArqRedis) -> None:
    assert await _ask_paced(redis, {}) == deferred("ticket", AHEAD_S)


async def test_holders_jitter_is_tolerated(redis: ArqRedis) -> None:
    # holders 8 ms late on average, 4 ms either way: 16 ms of tolerance
    assert await _ask_paced(redis, {"late": "0.008", "late_dev": "0.004"}) == granted(T0)


async def test_the_tolerance_is_at_most_50_ms(redis: ArqRedis) -> None:
    """Holders a whole second late are a stall, not jitter: 50 ms of tolerance at most."""
    clock = Clock()
    await redis.hset(_state_key(), mapping={"ptat": repr(clock.now + 0.06), "late": "1.0"})
    got = await outcome(RedisLimiter(FAST, redis, clock=clock), "next")
    assert got == deferred("ticket", 0.01)


async def test_a_slot_longer_than_the_jitter_keeps_its_tolerance(redis: ArqRedis) -> None:
    """One-second slots: 3/4 of a slot is far longer than 50 ms, and lateness changes
    nothing (MiMo's real pace: 0.6 s slots)."""
    clock = Clock()
    per_request = SECONDS.window_s / SECONDS.default_rpm / SECONDS.target
    ptat = clock.now + 0.75 * per_request + 0.01
    late = {"late": "0.04", "late_dev": "0.005"}
    await redis.hset(_state_key(), mapping={"ptat": repr(ptat), **late})
    got = await outcome(RedisLimiter(SECONDS, redis, clock=clock), "next")
    assert got == deferred("ticket", 0.01)


async def test_a_holders_lateness_is_measured_at_its_grant(redis: ArqRedis) -> None:
    clock = Clock()
    limiter = RedisLimiter(SECONDS, redis, clock=clock)
    assert await outcome(limiter, "first") == granted(T0)
    assert await outcome(limiter, "held") == deferred("ticket", 1.0)
    clock.now = T0 + 1.0 + 0.03  # back 30 ms after its slot
    assert await outcome(limiter, "held") == granted(T0 + 1.03)
    late, dev = await redis.hmget(_state_key(), ["late", "late_dev"])
    assert (float(late), float(dev)) == pytest.approx((0.03, 0.0))
    # a later holder moves the mean by a tenth of the difference
    assert await outcome(limiter, "third") == deferred("ticket", 0.97)
    clock.now = T0 + 2.0 + 0.01
    assert await outcome(limiter, "third") == granted(T0 + 2.01)
    late, dev = await redis.hmget(_state_key(), ["late", "late_dev"])
    assert (float(late), float(dev)) == pytest.approx((0.028, 0.002))
    assert (await limiter.snapshot(TTS_MODEL)).holder_late_s == pytest.approx(0.028)


async def test_no_lateness_measured_reads_none(redis: ArqRedis) -> None:
    assert (
        await RedisLimiter(FAST, redis, clock=Clock()).snapshot(TTS_MODEL)
    ).holder_late_s is None
