"""PURE: the quota bench's arithmetic — Little's-law sizing, per-window counts, one table row."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mimoq.worker.capacity import planning_latency_s, required_concurrency


def lognormal_latency_s(median_s: float, sigma: float) -> tuple[float, float]:
    """Mean and mean absolute deviation of a lognormal latency (what the limiter's EWMAs
    converge to): mean = m·e^(σ²/2), MAD = 2·mean·erf(σ / 2√2)."""
    mean = median_s * math.exp(sigma**2 / 2)
    return mean, 2 * mean * math.erf(sigma / (2 * math.sqrt(2)))


def concurrency_per_worker(
    requests_per_s: float, mean_s: float, deviation_s: float, workers: int
) -> int:
    """MIMOQ_CONCURRENCY for each of ``workers`` so that the fleet keeps ``requests_per_s``
    calls going (Little's law at the planning latency the start-up warning uses)."""
    need = required_concurrency(requests_per_s, planning_latency_s(mean_s, deviation_s))
    return max(1, math.ceil(need / workers))


@dataclass(frozen=True)
class Finished:
    """One job's result record, as far as the bench cares."""

    at: float  # finished_at, unix seconds
    succeeded: bool
    tokens: int  # usage.total_tokens (0 when not reported)


def per_window(
    finished: Sequence[Finished], *, t0: float, window_s: float, windows: int
) -> tuple[list[int], list[int]]:
    """Succeeded jobs and their tokens in each window ``[t0 + (k-1)W, t0 + kW)``, k = 1..N."""
    jobs, tokens = [0] * windows, [0] * windows
    for f in finished:
        k = math.floor((f.at - t0) / window_s)
        if f.succeeded and 0 <= k < windows:
            jobs[k] += 1
            tokens[k] += f.tokens
    return jobs, tokens


def status_count(stats: Mapping[str, Any], status: int) -> int:
    """Responses with ``status`` in a ``GET /_sim/stats`` answer."""
    return int(stats.get("responses", {}).get(str(status), 0))


def admitted(stats: Mapping[str, Any], model: str) -> int:
    """Calls of ``model`` the simulator's quota admitted, in a ``GET /_sim/stats`` answer."""
    return int(stats.get("quota", {}).get("admitted", {}).get(model, 0))


@dataclass(frozen=True)
class Row:
    """One scenario's figures over its steady windows (2..N)."""

    name: str
    workers: int
    concurrency: int
    limits: bool
    jobs: list[int]  # succeeded per window, all windows
    tokens: list[int]
    quota_requests: int
    quota_tokens: int | None  # set when the token quota is the binding one
    admitted_steady: int  # calls the simulator admitted during the steady windows
    rejected_steady: int  # 429s answered during the steady windows
    rejected_total: int
    gave_up: int  # jobs that finished as failed

    @property
    def steady_jobs(self) -> list[int]:
        return self.jobs[1:]

    @property
    def share(self) -> float:
        """Finished work per steady window over the binding quota."""
        if self.quota_tokens:
            steady = self.tokens[1:]
            return sum(steady) / (len(steady) * self.quota_tokens)
        return sum(self.steady_jobs) / (len(self.steady_jobs) * self.quota_requests)

    @property
    def per_success(self) -> float:
        return self.rejected_steady / max(1, sum(self.steady_jobs))

    def cells(self) -> list[str]:
        binding = "tokens" if self.quota_tokens else "requests"
        steady = self.steady_jobs
        return [
            self.name,
            f"{self.workers} x {self.concurrency}",
            "on" if self.limits else "off",
            f"{sum(steady) / len(steady):.1f}",
            f"{self.share:.1%} of {binding}",
            f"{self.admitted_steady / len(steady) / self.quota_requests:.1%}",
            str(self.rejected_steady),
            str(self.rejected_total),
            f"{self.per_success:.2f}",
            str(self.gave_up),
            " ".join(str(n) for n in self.jobs),
        ]


HEADER = [
    "scenario", "workers x conc", "limiter", "jobs/window", "share of quota", "admitted/RPM",
    "429s steady",
    "429s all", "429/success", "gave up", "jobs in windows 1..N",
]  # fmt: skip


def table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
    return "\n".join(line.rstrip() for line in lines)
