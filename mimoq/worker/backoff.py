"""PURE: how long a retryable job waits before its next try."""

from __future__ import annotations

from collections.abc import Callable

#: Never wait longer than this, even when the upstream asks for it (a persistent 429 on a
#: Token Plan key can mean an exhausted plan; the capped tries then end the job).
MAX_HONOURED_RETRY_AFTER_S = 3600.0


def backoff_s(
    attempt: int,
    *,
    base_s: float,
    max_s: float,
    retry_after_s: float | None = None,
    rand: Callable[[], float],
) -> float:
    """Delay before try ``attempt + 1`` after ``attempt`` failed tries (attempt >= 1).

    Capped exponential with "equal jitter": half the step is fixed so retries never bunch
    at zero, half is random so a fleet hit by the same outage does not retry in lockstep.
    A ``Retry-After`` from the upstream wins, plus up to 10 % jitter for the same reason.
    """
    if retry_after_s is not None:
        return float(min(retry_after_s, MAX_HONOURED_RETRY_AFTER_S) * (1 + 0.1 * rand()))
    step = float(min(max_s, base_s * 2.0 ** (max(attempt, 1) - 1)))
    return step / 2 + rand() * step / 2
