"""This worker's recent MiMo call latencies per account and model, and their p90.

The autoscaling signal (``desired_workers``) needs the fleet's call latency. Each worker
keeps its last ``RECENT_CALLS`` latencies of each account+model in memory (one append per
call, no Redis command) and its heartbeat record carries their p90 and count, so the
fleet-wide p90 costs nothing per call and one field per heartbeat.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Final

from pydantic import BaseModel, ConfigDict

#: Latencies kept per account+model: enough for a stable p90, recent enough to follow change.
RECENT_CALLS: Final = 200


class LatencySample(BaseModel):
    """One account+model's p90 over a worker's recent calls, as its heartbeat carries it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    account: str
    model: str
    p90_s: float
    calls: int


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of non-empty ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class CallLatencies:
    """The recent latencies of one process's calls (appended on the event loop only)."""

    def __init__(self, keep: int = RECENT_CALLS) -> None:
        self._keep = keep
        self._calls: dict[tuple[str, str], deque[float]] = {}

    def record(self, account: str, model: str, seconds: float) -> None:
        recent = self._calls.get((account, model))
        if recent is None:
            recent = self._calls[(account, model)] = deque(maxlen=self._keep)
        recent.append(max(seconds, 0.0))

    def samples(self) -> list[LatencySample]:
        """The p90 of each account+model this process has called."""
        return [
            LatencySample(
                account=account,
                model=model,
                p90_s=round(percentile(calls, 0.9), 4),
                calls=len(calls),
            )
            for (account, model), calls in sorted(self._calls.items())
            if calls
        ]


#: This process's calls (the account router records, the heartbeat reports).
CALL_LATENCIES: Final = CallLatencies()
