"""Capacity planning from the limiters' observations (latency EWMA, tokens per call)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest
from arq.connections import ArqRedis
from structlog.testing import capture_logs

from mimoq.core import wire
from mimoq.core.dialect_constants import ASR_MODEL, TTS_MODEL
from mimoq.core.settings import Settings
from mimoq.worker.arq_worker import _shutdown, _startup
from mimoq.worker.capacity import capacity_warning
from mimoq.worker.heartbeat import WorkerBeat
from mimoq.worker.limiter import LimiterSnapshot, RedisLimiter
from mimoq.worker.limiter.config import LimiterConfig
from mimoq.worker.limiter.observed_capacity import demand_from_snapshot, fleet_demands
from tests.conftest import RedisServer

BASE = LimiterSnapshot(
    model=TTS_MODEL, window_s=60, requests_configured=100, requests_effective=98.0,
    requests_recent=0, tokens_configured=None, tokens_effective=None, tokens_recent=0,
    rate_factor=1.0, cooldown_remaining_s=0.0, in_flight=0, max_in_flight=None, tickets=0,
    ticket_backlog_s=0.0, tokens_per_audio_s=None, latency_ewma_s=None,
    latency_deviation_s=None, rate_limited_total=0,
)  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "default_latency_s", "expected"),
    [
        ({}, None, None),  # nothing observed, no default: no opinion
        ({}, 10.0, (98 / 60, 10.0)),
        ({"latency_ewma_s": 8.0, "latency_deviation_s": 1.0}, 3.0, (98 / 60, 10.0)),
        ({"latency_ewma_s": 8.0, "latency_deviation_s": None}, None, (98 / 60, 8.0)),
        # a cool-down halves the effective rate, and so the slots needed
        ({"latency_ewma_s": 8.0, "requests_effective": 49.0}, None, (49 / 60, 8.0)),
        # ASR with 4-minute clips: 9,800 tokens a minute at ~2,700 a call bind, not 98 calls
        (
            {
                "model": ASR_MODEL,
                "latency_ewma_s": 20.0,
                "tokens_effective": 9800.0,
                "requests_recent": 3,
                "tokens_recent": 8100,
            },
            None,
            (9800 / 60 / 2700, 20.0),
        ),
        # short clips: the request quota binds
        (
            {
                "model": ASR_MODEL,
                "latency_ewma_s": 2.0,
                "tokens_effective": 9800.0,
                "requests_recent": 10,
                "tokens_recent": 660,
            },
            None,
            (98 / 60, 2.0),
        ),
    ],
)
def test_demand_from_snapshot(
    changes: dict[str, Any], default_latency_s: float | None, expected: tuple[float, float] | None
) -> None:
    demand = demand_from_snapshot(replace(BASE, **changes), default_latency_s=default_latency_s)
    if expected is None:
        assert demand is None
    else:
        assert demand is not None
        assert (demand.requests_per_s, demand.latency_s) == pytest.approx(expected)


@pytest.mark.redis
async def test_startup_warning_uses_observed_latency(redis: ArqRedis) -> None:
    limiter = RedisLimiter(LimiterConfig(account="a", burst=10), redis)
    lease = await limiter.acquire(TTS_MODEL, job_id="j")
    await limiter.release(lease, usage=None, latency_s=15.0)  # TTS calls take 15 s here

    async def warning_for(workers: int, concurrency: int) -> str | None:
        demands = await fleet_demands(limiter)  # what start-up measures the fleet against
        return capacity_warning(workers=workers, concurrency=concurrency, demands=demands)

    # 98 calls a minute x 15 s = 24.5 in flight: 20 slots are short, 26 are enough
    warning = await warning_for(2, 10)
    assert warning is not None and "needs about 25" in warning
    assert await warning_for(2, 13) is None
    # before any call finished, the default latency is used
    asr = demand_from_snapshot(await limiter.snapshot(ASR_MODEL), default_latency_s=30.0)
    assert asr is not None
    fresh = capacity_warning(workers=1, concurrency=1, demands=[asr])
    assert fresh is not None and "needs about 49" in fresh


def _beat(worker_id: str, *, draining: bool = False) -> WorkerBeat:
    now = time.time()
    return WorkerBeat(
        worker_id=worker_id, host="h", pid=1, started_at=now, beat_at=now, interval_s=10,
        ttl_s=30, concurrency=13, draining=draining,
    )  # fmt: skip


@pytest.mark.redis
@pytest.mark.parametrize(
    ("concurrency", "others", "limits", "seen_latency_s", "warned"),
    [
        (13, [], True, 15.0, True),  # 98/min x 15 s needs 25 slots; one worker has 13
        (13, [("w2", False)], True, 15.0, False),  # a second live worker: 26 slots
        (13, [("w2", True)], True, 15.0, True),  # a draining one does not count
        (25, [], True, 15.0, False),
        (1, [], False, 15.0, False),  # limits off: no quota to reach
        (14, [], True, None, False),  # nothing seen yet: one TTS model at 8 s needs 14 slots
        (10, [], True, None, True),
    ],
)
async def test_a_worker_warns_at_start_up_when_the_fleet_is_short(
    redis_server: RedisServer,
    redis: ArqRedis,
    concurrency: int,
    others: list[tuple[str, bool]],  # (worker id, draining) of the fleet's other workers
    limits: bool,
    seen_latency_s: float | None,
    warned: bool,
) -> None:
    settings = Settings(
        redis_url=redis_server.url, mimo={"base_url": "http://127.0.0.1:9/v1"}, worker={"concurrency": concurrency}, limiter={"enabled": limits, "burst": 10},
    )  # fmt: skip
    if seen_latency_s is not None:  # an earlier run of the fleet observed TTS calls
        limiter = RedisLimiter(LimiterConfig.from_settings(settings), redis)
        lease = await limiter.acquire(TTS_MODEL, job_id="earlier")
        await limiter.release(lease, usage=None, latency_s=seen_latency_s)
    for worker_id, draining in others:  # beating right now
        beat = _beat(worker_id, draining=draining)
        await redis.set(wire.WORKER_HEARTBEAT_PREFIX + worker_id, beat.model_dump_json())
    ctx: dict[str, Any] = {"settings": settings, "redis": redis}
    with capture_logs() as logs:
        await _startup(ctx)
    await _shutdown(ctx)
    warnings = [line for line in logs if line["event"] == "worker.capacity_warning"]
    assert len(warnings) == int(warned)
    if warned:
        assert f"MIMOQ_CONCURRENCY={concurrency}" in warnings[0]["warning"]
        assert warnings[0]["workers"] == 1
