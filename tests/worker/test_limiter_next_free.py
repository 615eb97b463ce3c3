"""limiter_next_free.lua: the read the account router compares accounts by (it reserves nothing)."""

from __future__ import annotations

import pytest
from arq.connections import ArqRedis

from mimoq.core.dialect_constants import TTS_MODEL
from mimoq.core.errors import CapacityDeferred
from mimoq.worker.limiter import LimiterConfig, RedisLimiter, UnlimitedLimiter

pytestmark = pytest.mark.redis

#: 10 requests per 10 s at the 98 % target: one slot every 1.0204 s
CONFIG = LimiterConfig(account="acct", window_s=10, default_rpm=10)
SLOT = 10 / (10 * 0.98)


def limiter_at(redis: ArqRedis, now: list[float], **changes: object) -> RedisLimiter:
    config = LimiterConfig(**{**CONFIG.__dict__, **changes})  # type: ignore[arg-type]
    return RedisLimiter(config, redis, clock=lambda: now[0])


async def test_an_idle_limiter_is_free_now_and_reading_reserves_nothing(redis: ArqRedis) -> None:
    now = [500.0]
    limiter = limiter_at(redis, now)
    assert await limiter.next_free_s(TTS_MODEL) == 0.0
    assert await limiter.next_free_s(TTS_MODEL) == 0.0
    await limiter.acquire(TTS_MODEL, job_id="first")  # granted: the reads took no slot
    assert await limiter.next_free_s(TTS_MODEL) == pytest.approx(SLOT)


async def test_the_schedule_end_counts_every_ticket(redis: ArqRedis) -> None:
    now = [500.0]
    limiter = limiter_at(redis, now)
    await limiter.acquire(TTS_MODEL, job_id="j0")
    for i in range(1, 4):
        with pytest.raises(CapacityDeferred):
            await limiter.acquire(TTS_MODEL, job_id=f"j{i}")
    assert await limiter.next_free_s(TTS_MODEL) == pytest.approx(4 * SLOT)
    now[0] += 1.5  # time passes: the same schedule is nearer
    assert await limiter.next_free_s(TTS_MODEL) == pytest.approx(4 * SLOT - 1.5)


async def test_a_cool_down_after_a_429_is_waited_for(redis: ArqRedis) -> None:
    now = [500.0]
    limiter = limiter_at(redis, now)
    await limiter.rate_limited(TTS_MODEL, retry_after_s=7.0)
    assert await limiter.next_free_s(TTS_MODEL) == pytest.approx(7.0)


async def test_a_full_in_flight_cap_is_not_free(redis: ArqRedis) -> None:
    now = [500.0]
    limiter = limiter_at(redis, now, max_in_flight=1, default_rpm=100_000)
    lease = await limiter.acquire(TTS_MODEL, job_id="running")
    assert await limiter.next_free_s(TTS_MODEL) > 0
    await limiter.release(lease, usage=None, latency_s=0.2)
    assert await limiter.next_free_s(TTS_MODEL) == pytest.approx(0.0, abs=1e-3)


async def test_without_limits_nothing_is_read(redis: ArqRedis) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        assert UnlimitedLimiter().queue_next_free(pipe, TTS_MODEL) == 0
        assert len(pipe.command_stack) == 0
