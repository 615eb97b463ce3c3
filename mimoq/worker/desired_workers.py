"""PURE: how many workers the fleet needs (``mimoq_desired_workers``), the autoscaling signal.

Queue depth is the wrong signal: once the quota binds, 5,000 waiting jobs need as many
workers as 50. A call holds a worker slot for its whole latency, so an account+model can
keep at most ``grant rate × call latency`` slots busy (Little's law). The fleet needs::

    cap(m)   = Σ over accounts a of  grants_per_s(m, a) × latency_p90_s(m, a)
    slots    = Σ over models m of  min(jobs(m), cap(m))  +  min(other jobs, headroom)
    desired  = ceil(slots / MIMOQ_CONCURRENCY)   (0 when there are no jobs at all; at least 1
                                                  when there are any)

``jobs(m)`` is the model's work the fleet can see per model: waiting for admission, admitted,
holding a limiter ticket, in flight. ``other jobs`` are those in arq's queue whose model is
not known without reading each job (interactive jobs not yet picked up, retries waiting out
a backoff, callback deliveries). They are capped by the headroom the models with jobs leave
(``Σ cap(m) - min(jobs(m), cap(m))`` over them), or, while no model has any, by the largest
model's cap: a job in the queue is soon picked up and then counted under its model, so an
interactive burst neither doubles a saturated model's cap nor counts the caps of idle
models. With limits off there is no cap: the value is the demand alone. The p90 (not the
mean) sizes for the slow calls, so the fleet keeps the quota full while a few long calls
hold their slots.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

#: Below this, a product such as 2.0000000001 is float noise, not a slot more.
_EPSILON: Final = 1e-9


@dataclass(frozen=True)
class QuotaFeed:
    """What one account+model's quota can keep busy: its grant rate and a call's p90 latency."""

    model: str
    account: str
    grants_per_s: float
    latency_p90_s: float

    @property
    def slots(self) -> float:
        """Calls in flight the quota can feed (Little's law: L = λW)."""
        return max(self.grants_per_s, 0.0) * max(self.latency_p90_s, 0.0)


@dataclass(frozen=True)
class FleetWork:
    """The jobs the fleet has to do: per model where that is known, and the others."""

    by_model: Mapping[str, int] = field(default_factory=dict)
    other: int = 0

    @property
    def total(self) -> int:
        return sum(max(n, 0) for n in self.by_model.values()) + max(self.other, 0)


@dataclass(frozen=True)
class DesiredWorkers:
    """The gauge's value and how it was reached (``mimoq inspect --json`` shows it all)."""

    workers: int
    concurrency: int
    jobs: int
    demand_slots: float
    cap_slots: float | None  # None: limits are off, nothing caps the demand
    models: dict[str, dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "workers": self.workers,
            "concurrency": self.concurrency,
            "jobs": self.jobs,
            "demand_slots": round(self.demand_slots, 3),
            "cap_slots": None if self.cap_slots is None else round(self.cap_slots, 3),
            "models": self.models,
        }


def _ceil(x: float) -> int:
    return max(0, math.ceil(x - _EPSILON))


def desired_workers(
    work: FleetWork, feeds: Sequence[QuotaFeed] | None, *, concurrency: int
) -> DesiredWorkers:
    """The workers ``work`` needs, capped by what ``feeds`` can keep busy (None: no cap)."""
    caps: dict[str, float] = {}
    for feed in feeds or ():
        caps[feed.model] = caps.get(feed.model, 0.0) + feed.slots
    other = max(work.other, 0)
    models: dict[str, dict[str, float]] = {}
    slots = 0.0
    headroom: float | None = None  # left by the models that have jobs; None: none has
    for model, jobs in sorted(work.by_model.items()):
        jobs = max(jobs, 0)
        if feeds is not None and model not in caps:
            other += jobs  # a model without a limiter of its own: capped with the rest
            continue
        cap = caps.get(model)
        used = float(jobs) if cap is None else min(float(jobs), cap)
        slots += used
        if cap is not None and jobs > 0:
            headroom = (headroom or 0.0) + cap - used
        models[model] = {"jobs": jobs, "slots": round(used, 3)}
        if cap is not None:
            models[model]["cap_slots"] = round(cap, 3)
    cap_total = None if feeds is None else sum(caps.values())
    if cap_total is None:
        slots += other
    else:
        slots += min(
            float(other), max(caps.values(), default=0.0) if headroom is None else headroom
        )
    jobs_total = work.total
    workers = 0 if jobs_total == 0 else max(1, _ceil(slots / concurrency))
    return DesiredWorkers(
        workers=workers,
        concurrency=concurrency,
        jobs=jobs_total,
        demand_slots=slots,
        cap_slots=cap_total,
        models=models,
    )


def fleet_p90(samples: Iterable[tuple[float, int]]) -> float | None:
    """One p90 from several workers' (p90, calls) pairs: their mean weighted by calls.

    Percentiles do not add up exactly; workers that share one Redis, one account and one
    model see the same latency distribution, so the weighted mean is close, and a worker
    that made more calls knows it better. None when no worker made a call.
    """
    total = weighted = 0.0
    for p90, calls in samples:
        if calls > 0 and p90 >= 0:
            total += calls
            weighted += p90 * calls
    return None if total == 0 else weighted / total
