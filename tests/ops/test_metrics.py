"""worker.metrics: label mapping and what each recording call adds (read from the registry)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from prometheus_client import REGISTRY

from mimoq.core.errors import (
    AuthenticationError,
    MimoqError,
    RateLimitedError,
    UpstreamResponseError,
    UpstreamUnavailable,
)
from mimoq.worker import metrics

MODEL = "mimo-v2.5-tts"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (None, "2xx"),
        (RateLimitedError("slow down", status=429), "429"),
        (UpstreamUnavailable("bad gateway", status=502), "502"),
        (
            UpstreamUnavailable("connection to MiMo failed (ConnectError)"),
            "upstream_unavailable_error",
        ),
        (UpstreamResponseError("no audio"), "upstream_response_error"),
        (AuthenticationError("bad key", status=401), "401"),
        (ValueError("a bug of ours"), "internal_error"),
        (asyncio.CancelledError(), "cancelled"),
    ],
)
def test_call_status_label(error: BaseException | None, status: str) -> None:
    assert metrics.call_status(error) == status


@pytest.mark.parametrize(
    ("error", "status", "rate_limited"),
    [
        (None, "2xx", 0),
        (RateLimitedError("slow down", status=429), "429", 1),
        (UpstreamUnavailable("timeout"), "upstream_unavailable_error", 0),
    ],
)
def test_mimo_call_counts_time_status_tokens(
    error: MimoqError | None, status: str, rate_limited: int
) -> None:
    usage: dict[str, int] = {}
    before = {
        "count": sample("mimoq_mimo_request_duration_seconds_count", model=MODEL),
        "status": sample("mimoq_mimo_responses_total", model=MODEL, status=status),
        "429": sample("mimoq_mimo_rate_limited_total", model=MODEL),
        "tokens": sample("mimoq_tokens_total", model=MODEL),
    }
    expected = pytest.raises(type(error)) if error else contextlib.nullcontext()
    with expected, metrics.mimo_call(MODEL, usage):
        usage["total_tokens"] = 37  # filled in during the call, read at its end
        if error is not None:
            raise error
    assert sample("mimoq_mimo_request_duration_seconds_count", model=MODEL) == before["count"] + 1
    assert sample("mimoq_mimo_responses_total", model=MODEL, status=status) == before["status"] + 1
    assert sample("mimoq_mimo_rate_limited_total", model=MODEL) == before["429"] + rate_limited
    assert sample("mimoq_tokens_total", model=MODEL) == before["tokens"] + 37


@pytest.mark.parametrize(
    ("outcome", "kwargs", "histogram", "extra"),
    [
        (metrics.JobOutcome.succeeded, {"duration_s": 1.5}, "job", None),
        (metrics.JobOutcome.failed, {"duration_s": 0.2}, "job", None),
        (
            metrics.JobOutcome.retried,
            {"duration_s": 0.3, "error_type": "rate_limit_error"},
            "job",
            ("mimoq_job_retries_total", {"kind": "speech", "error_type": "rate_limit_error"}),
        ),
        (metrics.JobOutcome.deferred, {"deferred_s": 2.0}, "wait", None),
        (metrics.JobOutcome.already_finished, {}, None, None),
    ],
)
def test_job_outcome(
    outcome: metrics.JobOutcome,
    kwargs: dict[str, object],
    histogram: str | None,
    extra: tuple[str, dict[str, str]] | None,
) -> None:
    job_hist = ("mimoq_job_duration_seconds_count", {"kind": "speech", "model": MODEL})
    wait_hist = ("mimoq_limiter_deferral_seconds_count", {"model": MODEL})
    watched = [("mimoq_jobs_total", {"kind": "speech", "outcome": outcome.value}), job_hist,
               wait_hist] + ([extra] if extra else [])  # fmt: skip
    before = [sample(name, **labels) for name, labels in watched]
    metrics.job_outcome("speech", MODEL, outcome, **kwargs)  # type: ignore[arg-type]
    after = [sample(name, **labels) for name, labels in watched]
    expected = [
        1,
        1 if histogram == "job" else 0,
        1 if histogram == "wait" else 0,
        *([1] if extra else []),
    ]
    assert [a - b for a, b in zip(after, before, strict=True)] == expected


def test_job_outcome_without_kind_or_model_is_labelled_unknown() -> None:
    before = sample("mimoq_jobs_total", kind="unknown", outcome="failed")
    metrics.job_outcome(None, None, metrics.JobOutcome.failed, duration_s=0.1)
    assert sample("mimoq_jobs_total", kind="unknown", outcome="failed") == before + 1
    assert sample("mimoq_job_duration_seconds_count", kind="unknown", model="unknown") >= 1


def test_deferral_wait_is_observed_as_its_length() -> None:
    before = sample("mimoq_limiter_deferral_seconds_sum", model=MODEL)
    metrics.job_outcome("speech", MODEL, metrics.JobOutcome.deferred, deferred_s=4.25)
    assert sample("mimoq_limiter_deferral_seconds_sum", model=MODEL) == pytest.approx(before + 4.25)


@pytest.mark.parametrize(
    ("reason", "outcome", "limiter_wait"),
    [("quota", "deferred", 1), ("chunks", "waiting", 0), ("other", "waiting", 0)],
)
def test_deferrals_are_counted_by_reason_and_only_quota_is_a_limiter_wait(
    reason: str, outcome: str, limiter_wait: int
) -> None:
    """A long job waiting for its chunks must not look like quota saturation."""
    watched = [
        ("mimoq_job_deferrals_total", {"kind": "transcription", "reason": reason}),
        ("mimoq_jobs_total", {"kind": "transcription", "outcome": outcome}),
        ("mimoq_limiter_deferral_seconds_count", {"model": MODEL}),
    ]
    before = [sample(name, **labels) for name, labels in watched]
    metrics.job_deferred("transcription", MODEL, reason, deferred_s=1.5)
    after = [sample(name, **labels) for name, labels in watched]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, limiter_wait]


@pytest.mark.parametrize(
    ("outcome", "reason", "dead"),
    [
        (metrics.CallbackOutcome.delivered, None, False),
        (metrics.CallbackOutcome.retry, None, False),
        (metrics.CallbackOutcome.dead_lettered, "gone", True),
        (metrics.CallbackOutcome.internal_error, None, False),
    ],
)
def test_callback_attempt(outcome: metrics.CallbackOutcome, reason: str | None, dead: bool) -> None:
    attempts = sample("mimoq_callback_attempts_total", outcome=outcome.value)
    gone = sample("mimoq_dead_letters_total", reason="gone")
    metrics.callback_attempt(outcome, dead_reason=reason)
    assert sample("mimoq_callback_attempts_total", outcome=outcome.value) == attempts + 1
    assert sample("mimoq_dead_letters_total", reason="gone") == gone + (1 if dead else 0)


def test_audio_processed_counts_seconds_and_bytes() -> None:
    seconds = sample("mimoq_audio_seconds_total", kind="transcription", model="mimo-v2.5-asr")
    size = sample("mimoq_audio_bytes_total", kind="transcription", model="mimo-v2.5-asr")
    metrics.audio_processed("transcription", "mimo-v2.5-asr", seconds=3.5, size=112_000)
    metrics.audio_processed(
        "transcription", "mimo-v2.5-asr", seconds=None, size=10
    )  # mp3 w/o duration
    assert sample(
        "mimoq_audio_seconds_total", kind="transcription", model="mimo-v2.5-asr"
    ) == pytest.approx(seconds + 3.5)
    assert (
        sample("mimoq_audio_bytes_total", kind="transcription", model="mimo-v2.5-asr")
        == size + 112_010
    )


def test_gauges_are_set_not_added() -> None:
    metrics.worker_state_sampled(in_flight=3, draining=True)
    metrics.worker_state_sampled(in_flight=1, draining=False)
    metrics.fleet_sampled(due=5, deferred=2, dead_letters=7)
    assert sample("mimoq_jobs_in_flight") == 1
    assert sample("mimoq_worker_draining") == 0
    assert sample("mimoq_queue_depth", state="due") == 5
    assert sample("mimoq_queue_depth", state="deferred") == 2
    assert sample("mimoq_dead_letters_stored") == 7
