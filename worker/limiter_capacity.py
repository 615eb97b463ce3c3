"""Capacity planning from what the limiters observed: latency EWMAs and recent token costs."""

from __future__ import annotations

from collections.abc import Sequence

from worker.capacity import ModelDemand, capacity_warning, planning_latency_s, quota_request_rate
from worker.limiter import LimiterSnapshot, RedisLimiter


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
    per_call = None
    if snapshot.requests_recent and snapshot.tokens_recent:
        per_call = snapshot.tokens_recent / snapshot.requests_recent
    rate = quota_request_rate(
        round(snapshot.requests_effective), snapshot.window_s,
        tokens_per_window=round(snapshot.tokens_effective or 0) or None,
        tokens_per_request=per_call,
    )  # fmt: skip
    return ModelDemand(snapshot.model, rate, latency)


async def startup_capacity_warning(
    limiter: RedisLimiter,
    *,
    workers: int,
    concurrency: int,
    models: Sequence[str],
    default_latency_s: float,
) -> str | None:
    """Warn when ``workers × concurrency`` cannot keep ``models`` at their quota.

    Uses each model's observed latency, or ``default_latency_s`` before any call finished.
    """
    demands = []
    for model in models:
        demand = demand_from_snapshot(
            await limiter.snapshot(model), default_latency_s=default_latency_s
        )
        if demand is not None:
            demands.append(demand)
    return capacity_warning(workers=workers, concurrency=concurrency, demands=demands)
