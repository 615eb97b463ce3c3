"""PURE: what happens to a job after one attempt — defer, retry, or finish.

The error tree (``mimoq.core.errors``) says what kind of thing went wrong; this module turns
that into one of four verdicts, with no I/O, so every branch is a row in a table test:

=====================================  ==============================================
attempt ended with                      verdict
=====================================  ==============================================
an outcome (no error)                   ``Finish(succeeded)``
an ``account_pause`` (account paused)   ``Defer`` at the router's wait; no try spent
an ``account_pause`` past its maximum   ``Finish(failed)`` with the account's error
``Deferred`` (quota, chunks pending)    ``Defer`` at its ``retry_after_s``; no try spent
``RetryableError``, tries left          ``RetryLater`` on the backoff schedule
``RetryableError``, last try            ``Finish(failed)``, "gave up after N tries: …"
``PermanentError`` / anything else      ``Finish(failed)`` at once
=====================================  ==============================================

The account router only records a paused account on the error (``account_pause``, whatever
the error's type: a 402, a 429 that tripped the breaker, or ``AccountPaused`` when no call
was made); the verdict is taken here. The runner (``mimoq.worker.runner``) is the
imperative shell that carries a verdict out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mimoq.core.errors import (
    CapacityDeferred,
    ChunksPending,
    Deferred,
    MimoqError,
    RetryableError,
    TenantLimitDeferred,
)
from mimoq.worker.backoff import backoff_s

#: A deferral that names no time comes back after this long.
DEFAULT_DEFER_S = 1.0


class DeferReason(StrEnum):
    """Why a job was put back without spending a try (a metric label, too)."""

    quota = "quota"  # the fleet limiter has no slot yet
    chunks = "chunks"  # a long job waits for its chunk jobs
    account = "account"  # the job's MiMo account is paused (circuit breaker)
    tenant_limit = "tenant_limit"  # the job's tenant reached its limit (MIMOQ_TENANT_LIMITS)
    other = "other"  # any other ``Deferred`` subclass


@dataclass(frozen=True)
class RetryPolicy:
    """The knobs ``decide_after_attempt`` needs from the settings."""

    max_tries: int
    backoff_base_s: float
    backoff_max_s: float


@dataclass(frozen=True)
class Defer:
    """Put the job back for ``delay_s``; the try is not counted. ``queued``: its place in the
    queue is already set (the limiter put it at its slot; a parent's wait, where its last
    chunk moves it), not to be moved by ``delay_s``."""

    delay_s: float
    reason: DeferReason
    queued: bool = False


@dataclass(frozen=True)
class RetryLater:
    """The attempt failed but may succeed later: run it again after ``delay_s``."""

    delay_s: float
    error: RetryableError


@dataclass(frozen=True)
class Finish:
    """The job is done: record ``succeeded`` or the failure described by ``error``."""

    error: dict[str, Any] | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None


AttemptVerdict = Defer | RetryLater | Finish


def defer_reason(error: Deferred) -> DeferReason:
    """The metric label of a deferral."""
    if isinstance(error, CapacityDeferred):
        return DeferReason.quota
    if isinstance(error, ChunksPending):
        return DeferReason.chunks
    if isinstance(error, TenantLimitDeferred):
        return DeferReason.tenant_limit
    return DeferReason.other


def decide_after_attempt(
    error: MimoqError | None,
    *,
    tries: int,
    policy: RetryPolicy,
    rand: Callable[[], float],
) -> AttemptVerdict:
    """The verdict for an attempt that ended with ``error`` (``None``: it succeeded).

    ``tries`` counts this attempt (1 for the first), deferrals excluded; ``rand`` is the
    jitter source, injected so the schedule is reproducible in tests.
    """
    if error is None:
        return Finish()
    pause = error.account_pause
    if pause is not None:
        # Whatever the call's own error, its account is what stands in the way.
        if pause.expired is not None:
            return Finish(error=pause.expired.to_dict())
        return Defer(delay_s=pause.retry_after_s, reason=DeferReason.account)
    if isinstance(error, Deferred):
        delay = error.retry_after_s or DEFAULT_DEFER_S
        return Defer(delay_s=delay, reason=defer_reason(error), queued=error.queued)
    if isinstance(error, RetryableError) and tries < policy.max_tries:
        delay = backoff_s(
            tries,
            base_s=policy.backoff_base_s,
            max_s=policy.backoff_max_s,
            retry_after_s=error.retry_after_s,
            rand=rand,
        )
        return RetryLater(delay_s=delay, error=error)
    details = error.to_dict()
    if isinstance(error, RetryableError):
        details["message"] = f"gave up after {tries} tries: {error.message}"
    return Finish(error=details)
