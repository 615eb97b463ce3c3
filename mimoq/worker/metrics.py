"""Prometheus metrics of a worker process: defined once here, recorded by one call per site.

Every metric lives in prometheus-client's default registry (with its process and GC
collectors), so ``/metrics`` on a worker shows everything. Labels are bounded sets: kinds,
validated model names, status codes, outcomes and reasons, never job ids or URLs.

Fleet-wide gauges (queue depth, dead letters) are sampled from Redis by each worker's
heartbeat; every worker reports the same number, so aggregate them with ``max``, not ``sum``.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from enum import StrEnum
from typing import Any, Final

from prometheus_client import Counter, Gauge, Histogram

from mimoq.core.dialect import usage_tokens
from mimoq.core.errors import MimoqError, RateLimitedError

UNKNOWN: Final = "unknown"

# MiMo answers a sentence in seconds and long texts in 20-60 s; jobs add limiter waits.
_CALL_BUCKETS: Final = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
_JOB_BUCKETS: Final = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600)
_WAIT_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


class JobOutcome(StrEnum):
    """How one run (try) of a job ended, as the ``outcome`` label of ``mimoq_jobs_total``."""

    succeeded = "succeeded"
    failed = "failed"  # for good: a failure result was recorded
    retried = "retried"  # a retryable error; arq runs it again after a backoff
    deferred = "deferred"  # the fleet limiter had no capacity yet (not counted as a try)
    waiting = "waiting"  # put back for another reason (chunks running); not a try either
    already_finished = "already_finished"  # a re-run found the result of an earlier run
    cancelled = "cancelled"  # cancelled (docs/cancel.md): recorded without a result


class CallbackOutcome(StrEnum):
    """How one callback delivery attempt ended."""

    delivered = "delivered"
    retry = "retry"
    dead_lettered = "dead_lettered"
    skipped = "skipped"  # already delivered by an earlier run of the same delivery
    internal_error = "internal_error"  # our code or Redis failed, not the receiver
    refused = "refused"  # a delivery job with no worker-written record (forged): not sent


JOBS: Final = Counter(
    "mimoq_jobs", "Job runs by kind and outcome (one per try).", ["kind", "outcome"]
)
JOB_SECONDS: Final = Histogram(
    "mimoq_job_duration_seconds",
    "Wall time of one try of a job that reached MiMo or failed (deferrals excluded).",
    ["kind", "model"],
    buckets=_JOB_BUCKETS,
)
RETRIES: Final = Counter(
    "mimoq_job_retries", "Tries that ended in a retry, by error type.", ["kind", "error_type"]
)
JOBS_IN_FLIGHT: Final = Gauge("mimoq_jobs_in_flight", "Jobs running in this worker process.")
DRAINING: Final = Gauge(
    "mimoq_worker_draining", "1 while this worker finishes its jobs before stopping."
)
MIMO_SECONDS: Final = Histogram(
    "mimoq_mimo_request_duration_seconds",
    "One MiMo call, from sending to the last byte of the answer handled.",
    ["model"],
    buckets=_CALL_BUCKETS,
)
MIMO_RESPONSES: Final = Counter(
    "mimoq_mimo_responses",
    "MiMo calls by model and outcome: the HTTP status (2xx on success), or the error type "
    "when there was none (timeouts, connection errors, unusable 200s).",
    ["model", "status"],
)
MIMO_RATE_LIMITED: Final = Counter(
    "mimoq_mimo_rate_limited", "429 answers from MiMo, by model.", ["model"]
)
DEFERRALS: Final = Counter(
    "mimoq_job_deferrals",
    "Runs put back without spending a try, by reason: quota (the fleet limiter), chunks (a "
    "long job waiting for its chunk jobs) or other.",
    ["kind", "reason"],
)
LIMITER_WAIT: Final = Histogram(
    "mimoq_limiter_deferral_seconds",
    "Deferrals by the fleet limiter and how long each put its job off; _count is the number "
    "of deferrals.",
    ["model"],
    buckets=_WAIT_BUCKETS,
)
TOKENS: Final = Counter("mimoq_tokens", "Tokens MiMo reported in usage, by model.", ["model"])
AUDIO_SECONDS: Final = Counter(
    "mimoq_audio_seconds",
    "Seconds of audio processed: produced by speech, sent for transcription.",
    ["kind", "model"],
)
AUDIO_BYTES: Final = Counter(
    "mimoq_audio_bytes", "Bytes of audio processed (decoded, not base64).", ["kind", "model"]
)
CALLBACK_ATTEMPTS: Final = Counter(
    "mimoq_callback_attempts", "Callback delivery attempts by outcome.", ["outcome"]
)
DEAD_LETTERS: Final = Counter(
    "mimoq_dead_letters", "Callback deliveries dead-lettered, by reason.", ["reason"]
)
QUEUE_DEPTH: Final = Gauge(
    "mimoq_queue_depth",
    "Jobs in the queue (fleet-wide, sampled at each heartbeat): due now or deferred.",
    ["state"],
)
UNFINISHED_JOBS: Final = Gauge(
    "mimoq_unfinished_jobs",
    "Every job not finished yet (fleet-wide, sampled at each heartbeat), by state (queued, "
    "waiting for admission, deferred, in_flight), lane and kind: the whole queue depth.",
    ["state", "lane", "kind"],
)
_unfinished_labels: set[tuple[str, str, str]] = set()
DEAD_LETTERS_STORED: Final = Gauge(
    "mimoq_dead_letters_stored", "Dead letters kept in Redis (fleet-wide, sampled)."
)
#: Tenants get their own label value up to this many per process; the rest are ``other``.
MAX_TENANT_LABELS: Final = 20
OTHER_TENANTS: Final = "other"
NO_TENANT_LABEL: Final = "none"
LIMITER_GRANTS: Final = Counter(
    "mimoq_limiter_grants",
    "MiMo calls the fleet limiter granted, by model, lane and tenant (the first "
    f"{MAX_TENANT_LABELS} tenants a process sees; the rest are '{OTHER_TENANTS}').",
    ["model", "lane", "tenant"],
)
BULK_WAITING: Final = Gauge(
    "mimoq_bulk_waiting",
    "Bulk jobs waiting for admission (fleet-wide, sampled by each worker's admission round), "
    "by model and tenant (tenant labels capped as for mimoq_limiter_grants).",
    ["model", "tenant"],
)
INTERACTIVE_WAITING: Final = Gauge(
    "mimoq_interactive_waiting",
    "Interactive jobs waiting for admission behind a flood of them (as mimoq_bulk_waiting).",
    ["model", "tenant"],
)
_WAITING: Final = {"bulk": BULK_WAITING, "interactive": INTERACTIVE_WAITING}
_tenant_labels: set[str] = set()
_waiting_labels: dict[tuple[str, str], set[str]] = {}


#: Usage per tenant and model (docs/usage.md), counted as jobs finish in
#: this process; tenant labels capped as for mimoq_limiter_grants.
USAGE_COUNTERS: Final = {
    metric: Counter(
        f"mimoq_usage_{metric}",
        f"Usage per tenant and model: {what} (tenant labels capped as for mimoq_limiter_grants).",
        ["tenant", "model"],
    )
    for metric, what in (
        ("requests", "MiMo calls that answered (each chunk of a long job is one)"),
        ("failed", "jobs that ended failed"),
        ("audio_in_s", "seconds of audio sent for transcription"),
        ("audio_out_s", "seconds of speech produced"),
        ("chars", "characters spoken"),
        ("tokens", "tokens MiMo reported"),
    )
}


def usage_counted(tenant: str | None, model: str, amounts: Mapping[str, float]) -> None:
    """Add one finished job's usage to the ``mimoq_usage_*_total`` counters."""
    label = tenant_label(tenant)
    for metric, amount in amounts.items():
        counter = USAGE_COUNTERS.get(metric)
        if counter is not None and amount > 0:
            counter.labels(label, model).inc(amount)


ACCOUNT_PAUSED: Final = Gauge(
    "mimoq_account_paused",
    "1 while the account's circuit breaker holds it paused (as this worker last saw it).",
    ["account"],
)


def accounts_paused(accounts: Iterable[str], paused: Collection[str]) -> None:
    """Set ``mimoq_account_paused`` for every account this worker routes to."""
    for account in accounts:
        ACCOUNT_PAUSED.labels(account).set(1 if account in paused else 0)


def _label(value: str | None) -> str:
    return value or UNKNOWN


def tenant_label(tenant: str | None) -> str:
    """A bounded label for ``tenant``: itself for the first ``MAX_TENANT_LABELS`` seen by this
    process, ``other`` after that (tenant names are caller-chosen: unbounded otherwise)."""
    if not tenant or tenant == "_":
        return NO_TENANT_LABEL
    if tenant in _tenant_labels:
        return tenant
    if len(_tenant_labels) < MAX_TENANT_LABELS:
        _tenant_labels.add(tenant)
        return tenant
    return OTHER_TENANTS


def limiter_grant(model: str, lane: str, tenant: str | None) -> None:
    """Count one call the limiter granted, under its lane and (bounded) tenant."""
    LIMITER_GRANTS.labels(model, lane, tenant_label(tenant)).inc()


def waiting(model: str, depths: Mapping[str, int], lane: str = "bulk") -> None:
    """Set the waiting gauge of ``lane`` and ``model`` from its depth per tenant (zero what
    emptied)."""
    gauge = _WAITING[lane]
    totals: dict[str, int] = {}
    for tenant, depth in depths.items():
        label = tenant_label(tenant)
        totals[label] = totals.get(label, 0) + depth
    for gone in _waiting_labels.get((lane, model), set()) - set(totals):
        gauge.labels(model, gone).set(0)
    _waiting_labels[(lane, model)] = set(totals)
    for label, depth in totals.items():
        gauge.labels(model, label).set(depth)


def job_outcome(
    kind: str | None,
    model: str | None,
    outcome: JobOutcome,
    *,
    duration_s: float | None = None,
    error_type: str | None = None,
    deferred_s: float | None = None,
) -> None:
    """Record how one try of a job ended (call once per try, where the runner logs it)."""
    JOBS.labels(_label(kind), outcome.value).inc()
    if duration_s is not None:
        JOB_SECONDS.labels(_label(kind), _label(model)).observe(duration_s)
    if outcome is JobOutcome.retried:
        RETRIES.labels(_label(kind), _label(error_type)).inc()
    elif outcome is JobOutcome.deferred:
        LIMITER_WAIT.labels(_label(model)).observe(deferred_s or 0.0)


def job_deferred(kind: str | None, model: str | None, reason: str, *, deferred_s: float) -> None:
    """Record a run put back without spending a try; only quota deferrals are limiter waits.

    ``reason`` is a ``mimoq.worker.decide.DeferReason`` value (quota, chunks, other).
    """
    DEFERRALS.labels(_label(kind), reason).inc()
    outcome = JobOutcome.deferred if reason == "quota" else JobOutcome.waiting
    job_outcome(kind, model, outcome, deferred_s=deferred_s)


def call_status(error: BaseException | None) -> str:
    """The ``status`` label of a MiMo call that ended with ``error`` (None: it succeeded)."""
    if error is None:
        return "2xx"
    if isinstance(error, MimoqError):
        return str(error.status) if error.status is not None else error.error_type
    return "internal_error" if isinstance(error, Exception) else "cancelled"


@contextmanager
def mimo_call(model: str, usage: Mapping[str, Any]) -> Iterator[None]:
    """Time one MiMo call and count its outcome; ``usage`` is read when the call is over."""
    started = time.monotonic()
    error: BaseException | None = None
    try:
        yield
    except BaseException as exc:  # counted, then re-raised unchanged (cancellation too)
        error = exc
        raise
    finally:
        MIMO_SECONDS.labels(model).observe(time.monotonic() - started)
        MIMO_RESPONSES.labels(model, call_status(error)).inc()
        if isinstance(error, RateLimitedError):
            MIMO_RATE_LIMITED.labels(model).inc()
        tokens = usage_tokens(usage)
        if tokens:
            TOKENS.labels(model).inc(tokens)


def audio_processed(kind: str, model: str, *, seconds: float | None, size: int) -> None:
    """Count audio a job produced (speech) or sent (transcription)."""
    if seconds:
        AUDIO_SECONDS.labels(kind, model).inc(seconds)
    AUDIO_BYTES.labels(kind, model).inc(size)


def callback_attempt(outcome: CallbackOutcome, *, dead_reason: str | None = None) -> None:
    """Count one delivery attempt; a dead-lettered one also counts under its reason."""
    CALLBACK_ATTEMPTS.labels(outcome.value).inc()
    if outcome is CallbackOutcome.dead_lettered:
        DEAD_LETTERS.labels(_label(dead_reason)).inc()


def worker_state_sampled(*, in_flight: int, draining: bool) -> None:
    """This process's own gauges; cheap, called on every poll of the queue."""
    JOBS_IN_FLIGHT.set(in_flight)
    DRAINING.set(1 if draining else 0)


def unfinished_sampled(counts: Mapping[tuple[str, str, str], int]) -> None:
    """Set ``mimoq_unfinished_jobs`` from a depth reading (zero the label sets that emptied;
    labels are bounded: four states, three lanes, six kinds)."""
    for gone in _unfinished_labels - set(counts):
        UNFINISHED_JOBS.labels(*gone).set(0)
    _unfinished_labels.clear()
    _unfinished_labels.update(counts)
    for labels, n in counts.items():
        UNFINISHED_JOBS.labels(*labels).set(n)


def fleet_sampled(*, due: int, deferred: int, dead_letters: int) -> None:
    """Fleet-wide gauges, from the counts a heartbeat read from Redis."""
    QUEUE_DEPTH.labels("due").set(due)
    QUEUE_DEPTH.labels("deferred").set(deferred)
    DEAD_LETTERS_STORED.set(dead_letters)


DESIRED_WORKERS: Final = Gauge(
    "mimoq_desired_workers",
    "Workers the fleet needs: the waiting work's demand capped by what the quota can feed "
    "(grant rate x call latency p90 / MIMOQ_CONCURRENCY per model and account; docs/production.md, "
    "'Scaling'). Fleet-wide: every worker and mimoq serve report the same number.",
)


def desired_workers_computed(workers: int) -> None:
    """The autoscaling signal, as this process last computed it."""
    DESIRED_WORKERS.set(workers)
