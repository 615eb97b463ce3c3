"""The limiter's scripts also run on the embedded in-process Redis (fakeredis with Lua)."""

from __future__ import annotations

import time

import pytest

from mimoq.core.connections import embedded
from mimoq.core.dialect_constants import ASR_MODEL, TTS_MODEL
from mimoq.core.errors import CapacityDeferred
from mimoq.core.settings import Settings
from mimoq.worker.limiter import LimiterConfig, RedisLimiter, build_limiter


async def test_every_decision_runs_on_the_embedded_redis() -> None:
    redis = embedded()
    try:
        settings = Settings(limiter={"window_s": 60, "default_rpm": 2, "target": 0.98})
        limiter = build_limiter(settings, redis)
        assert isinstance(limiter, RedisLimiter)
        lease = await limiter.acquire(ASR_MODEL, job_id="a", audio_s=4.0)
        assert lease.tokens == 66 and lease.granted_at > 0
        asked, clock = time.monotonic(), time.time()
        with pytest.raises(CapacityDeferred) as caught:
            await limiter.acquire(ASR_MODEL, job_id="b", audio_s=4.0)
        answered = time.monotonic()
        # told to come back the hold before its slot (counted from the grant), to wait the
        # rest in-process; whatever time a loaded host took since the grant comes off it
        slot = 60 / 2 / 0.98 - LimiterConfig.hold_s
        since_grant = clock - lease.granted_at
        early, late = slot - since_grant - (answered - asked), slot - since_grant
        assert early - 0.05 <= caught.value.retry_after_s <= late + 0.05
        await limiter.release(lease, usage={"total_tokens": 100}, latency_s=2.0)
        await limiter.flush_releases()  # sent now, not after its batch's linger
        await limiter.rate_limited(TTS_MODEL, 1.0)
        with pytest.raises(CapacityDeferred, match="cooldown"):
            await limiter.acquire(TTS_MODEL, job_id="c")
        asr = await limiter.snapshot(ASR_MODEL)
        assert (asr.tokens_recent, asr.tickets, asr.latency_ewma_s) == (100, 1, 2.0)
        assert asr.tokens_per_audio_s == pytest.approx(11.25 + 0.2 * ((100 - 21) / 4 - 11.25))
        assert (await limiter.snapshot(TTS_MODEL)).rate_factor == LimiterConfig.first_decrease
    finally:
        await redis.aclose()
