"""PURE: the worker concurrency that can reach the quota (Little's law), and a warning when short.

A call holds a worker slot for its whole latency, so keeping a model at ``λ`` calls per
second takes ``λ × latency`` slots in flight on average (100 RPM at 8 s: ~14). A fleet with
fewer slots than the sum over its models cannot use the quota however well it is paced.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: Planning latency = EWMA + this many mean deviations (about a p90-p95 for latencies).
LATENCY_SPREAD = 2.0


@dataclass(frozen=True)
class ModelDemand:
    """One model's share of the fleet: the call rate the quota allows and a call's latency."""

    model: str
    requests_per_s: float
    latency_s: float

    @property
    def slots(self) -> float:
        """Calls in flight needed on average (Little's law: L = λW)."""
        return self.requests_per_s * self.latency_s


def quota_request_rate(
    requests_per_window: int,
    window_s: float,
    *,
    target: float = 1.0,
    tokens_per_window: int | None = None,
    tokens_per_request: float | None = None,
) -> float:
    """Calls per second the quota allows; a token quota binds when calls are expensive."""
    rate = requests_per_window * target / window_s
    if tokens_per_window and tokens_per_request and tokens_per_request > 0:
        rate = min(rate, tokens_per_window * target / window_s / tokens_per_request)
    return rate


def planning_latency_s(mean_s: float, deviation_s: float = 0.0) -> float:
    """A latency to size for: the mean plus ``LATENCY_SPREAD`` mean deviations."""
    return mean_s + LATENCY_SPREAD * max(deviation_s, 0.0)


def required_concurrency(requests_per_s: float, latency_s: float) -> int:
    """Worker slots that keep ``requests_per_s`` calls per second of ``latency_s`` going."""
    # 1e-9 keeps an exact product such as 2.0 from rounding up to 3 through float noise.
    return max(0, math.ceil(requests_per_s * latency_s - 1e-9))


def fleet_concurrency_needed(demands: Sequence[ModelDemand]) -> int:
    """Slots the whole fleet needs so that every model in ``demands`` can reach its quota."""
    return max(0, math.ceil(sum(d.slots for d in demands) - 1e-9))


def capacity_warning(
    *, workers: int, concurrency: int, demands: Sequence[ModelDemand]
) -> str | None:
    """A start-up warning when ``workers × concurrency`` slots cannot reach the quota, else None."""
    need = fleet_concurrency_needed(demands)
    have = workers * concurrency
    if have >= need:
        return None
    detail = "; ".join(
        f"{d.model}: {d.requests_per_s:.2f}/s x {d.latency_s:.1f} s = {d.slots:.1f}"
        for d in demands
    )
    per_worker = math.ceil(need / max(workers, 1))
    return (
        f"the fleet keeps at most {have} MiMo calls in flight ({workers} worker(s) x "
        f"MIMOQ_CONCURRENCY={concurrency}) but its quota needs about {need} ({detail}), so "
        f"expect about {have / need:.0%} of the quota: set MIMOQ_CONCURRENCY={per_worker} or "
        f"run {math.ceil(need / concurrency)} workers"
    )
