"""Capacity planning from what the limiters observed: latency EWMAs and recent token costs."""

from __future__ import annotations

import time
from typing import Final

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from mimoq.core import dialect_constants as dc
from mimoq.core.settings import Settings
from mimoq.worker.capacity import (
    ModelDemand,
    capacity_warning,
    planning_latency_s,
    quota_request_rate,
)
from mimoq.worker.limiter.core import Limiter, LimiterSnapshot, RedisLimiter

log = structlog.get_logger("mimoq.limiter")

#: Latency assumed while no call of any model has finished: a short TTS text's median
#: ("several seconds": docs/mimo-dialect.md). Used for one speech model, the least a
#: fleet runs.
UNOBSERVED_LATENCY_S: Final = 8.0


def demand_from_snapshot(
    snapshot: LimiterSnapshot, *, default_latency_s: float | None = None
) -> ModelDemand | None:
    """The model's demand on worker slots at its effective rate; None with no latency known.

    A token-limited model's call rate is bounded by its recent average tokens per call.
    """
    if snapshot.latency_ewma_s is not None:
        latency = planning_latency_s(snapshot.latency_ewma_s, snapshot.latency_deviation_s or 0.0)
    elif default_latency_s is not None:
        latency = default_latency_s
    else:
        return None
    return ModelDemand(snapshot.model, snapshot_request_rate(snapshot), latency)


def snapshot_request_rate(snapshot: LimiterSnapshot) -> float:
    """Calls per second the limiter grants at its paced rate; a token-limited model's rate
    is bounded by its recent average tokens per call."""
    per_call = None
    if snapshot.requests_recent and snapshot.tokens_recent:
        per_call = snapshot.tokens_recent / snapshot.requests_recent
    return quota_request_rate(
        round(snapshot.requests_effective), snapshot.window_s,
        tokens_per_window=round(snapshot.tokens_effective or 0) or None,
        tokens_per_request=per_call,
    )  # fmt: skip


async def fleet_workers(redis: Redis) -> int:
    """Workers in the fleet, this starting one included: the other live heartbeats, plus one.

    (A starting worker has not beaten yet; one that restarted within the heartbeat TTL may
    be counted twice, which only makes the warning more lenient.)
    """
    # Imported here: the heartbeat module pulls in the metrics registry, which the
    # limiter's other users (``mimoq limits``) do not need.
    from mimoq.worker.heartbeat import read_beats

    now = time.time()
    return 1 + sum(beat.live(now) for beat in await read_beats(redis))


async def fleet_demands(limiter: RedisLimiter) -> list[ModelDemand]:
    """What the fleet must carry: every model with a latency on record, at that latency;
    with none on record, one speech model at ``UNOBSERVED_LATENCY_S``."""
    snapshots = {m: await limiter.snapshot(m) for m in limiter.config.models()}
    demands = [d for s in snapshots.values() if (d := demand_from_snapshot(s)) is not None]
    if demands:
        return demands
    fresh = demand_from_snapshot(
        snapshots.get(dc.TTS_MODEL) or await limiter.snapshot(dc.TTS_MODEL),
        default_latency_s=UNOBSERVED_LATENCY_S,
    )
    return [fresh] if fresh is not None else []


async def warn_if_fleet_is_short(limiter: Limiter, redis: Redis, settings: Settings) -> None:
    """At worker start-up: log ``worker.capacity_warning`` when the fleet's slots (live
    workers × ``MIMOQ_CONCURRENCY``) cannot reach the quota (see ``fleet_demands``).

    Never fails a start-up: a Redis error only skips the check.
    """
    if not isinstance(limiter, RedisLimiter):
        return  # limits are off: there is no quota to reach
    try:
        workers = await fleet_workers(redis)
        demands = await fleet_demands(limiter)
    except RedisError as exc:
        log.warning("worker.capacity_unknown", error=type(exc).__name__)
        return
    warning = capacity_warning(
        workers=workers, concurrency=settings.worker.concurrency, demands=demands
    )
    if warning is not None:
        log.warning("worker.capacity_warning", workers=workers, warning=warning)
