"""PURE: when a run will end, from the fleet's grant rate and the run's share of it.

The limiter grants each model's calls at a rate the whole fleet shares; within a lane,
tenants with waiting work take turns (round robin), so each gets an equal part of the
lane's rate while it has work, and a tenant that runs out hands its part to the others.
A run's remaining time is therefore a *water-filling* of its lane's rate: the run and its
competitors drain together at ``rate / n`` each; when the smallest backlog is done, the
rest go on at ``rate / (n - 1)``, and so on. The run's own past rate plays no part: it
says nothing about a competitor that has just finished or just arrived.

Everything here takes its inputs (times, counts, "now") as arguments: table tests drive it
with an injected clock. ``mimoq.worker.run_progress`` reads the inputs from Redis.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

#: Fewer grants than this in the measuring window is too few to measure a rate from.
MIN_GRANTS_MEASURED = 3


def measured_rate(grant_times: Sequence[float], *, now: float, window_s: float) -> float | None:
    """Grants per second over the last ``window_s``: ``n - 1`` intervals across the span
    from the oldest grant in the window to the newest (a window only partly busy, as at the
    start of a run, is not diluted by its idle part). None when too few grants to tell."""
    recent = sorted(t for t in grant_times if now - window_s < t <= now)
    if len(recent) < MIN_GRANTS_MEASURED:
        return None
    span = recent[-1] - recent[0]
    return (len(recent) - 1) / span if span > 0 else None


def round_robin_seconds(remaining: int, competitors: Sequence[int], rate_per_s: float) -> float:
    """Seconds until ``remaining`` jobs are granted when they share ``rate_per_s`` round
    robin with tenants holding ``competitors`` jobs each (water-filling, see above)."""
    if remaining <= 0:
        return 0.0
    if rate_per_s <= 0 or not math.isfinite(rate_per_s):
        return math.inf
    others: list[float] = sorted(float(c) for c in competitors if c > 0)
    elapsed, left = 0.0, float(remaining)
    while True:
        share = rate_per_s / (1 + len(others))
        smallest = others[0] if others else math.inf
        if left <= smallest:
            return elapsed + left / share
        # every tenant drains `smallest` jobs; the smallest competitor is done then
        elapsed += smallest / share
        left -= smallest
        others = [c - smallest for c in others[1:] if c - smallest > 0]


@dataclass(frozen=True)
class LaneLoad:
    """One model's lane as the run sees it: the rate it is granted and who competes."""

    #: grants per second of this lane of the model, fleet-wide (measured, or the quota's
    #: pace while too few grants were measured)
    rate_per_s: float
    #: jobs still to be granted of every *other* tenant with work in this lane
    competitors: Sequence[int] = field(default_factory=tuple)
    #: mean seconds from a grant to the call's answer (0 when unknown)
    latency_s: float = 0.0
    #: seconds since the lane's newest grant (None: none in the window)
    last_grant_ago_s: float | None = None


@dataclass(frozen=True)
class Estimate:
    """Seconds left and the moment the run is expected to end (None: cannot tell)."""

    eta_s: float | None
    eta_at: float | None

    def to_dict(self) -> dict[str, float | None]:
        return {
            "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
            "eta_at": None if self.eta_at is None else round(self.eta_at, 1),
        }


def estimate(
    *,
    waiting_by_model: Mapping[str, int],
    in_flight: int,
    loads: Mapping[str, LaneLoad],
    now: float,
) -> Estimate:
    """When the run ends: its jobs not granted yet (per model) drained by water-filling in
    each model's lane (models run in parallel: the slowest decides), plus one call's
    latency for the last of them; with nothing left to grant, the calls in flight."""
    seconds = 0.0
    latency = 0.0
    for model, waiting in waiting_by_model.items():
        if waiting <= 0:
            continue
        load = loads.get(model)
        if load is None:
            return Estimate(None, None)
        seconds = max(seconds, round_robin_seconds(waiting, load.competitors, load.rate_per_s))
        latency = max(latency, load.latency_s)
    if not math.isfinite(seconds):
        return Estimate(None, None)
    if seconds == 0.0 and in_flight > 0:
        # every job granted: the last call ends one latency after the newest grant
        latency = max((_call_left(load) for load in loads.values()), default=0.0)
    elif seconds == 0.0:
        return Estimate(0.0, now)
    eta = seconds + latency
    return Estimate(eta, now + eta)


def _call_left(load: LaneLoad) -> float:
    """Seconds until the newest call of the lane answers (a latency after its grant)."""
    if load.last_grant_ago_s is None:
        return load.latency_s
    return max(0.0, load.latency_s - load.last_grant_ago_s)


def split_by_model(waiting: int, models: Mapping[str, int]) -> dict[str, int]:
    """The run's waiting jobs spread over its models in proportion to the jobs enqueued for
    each (a run almost always has one model: then all of them)."""
    total = sum(n for n in models.values() if n > 0)
    if waiting <= 0 or total <= 0:
        return {}
    shares = {m: waiting * n / total for m, n in models.items() if n > 0}
    return {m: max(1, round(s)) for m, s in shares.items() if s > 0}
