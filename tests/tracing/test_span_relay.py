"""A worker's relayed spans: recorded in the worker, made SDK spans and exported over OTLP by
the sidecar process, with the ids the worker handed on; a dead sidecar costs no job
anything; a full queue drops spans instead of growing; the relay samples as the SDK."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from mimoq.core import span_relay, tracing
from tests.support.otlp import OtlpReceiver

PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{PARENT_TRACE}-00f067aa0ba902b7-01"
MIMO_URL = "http://127.0.0.1:9/v1/chat/completions"


class Store:
    def is_local(self) -> bool:
        return True

    def url(self, key: str) -> str:
        return "file:///" + key


def one_job(job_id: str, status: int = 200) -> str:
    """A worker's hooks for one job (attempt, storage write, MiMo call); returns the
    traceparent the MiMo call's span handed on (what a callback would carry)."""
    with tracing.attempt_span(
        job_id, {"traceparent": PARENT, "model": "mimo-v2.5-tts", "tenant": "t-a"}, "speech",
        destination="mimoq:queue", arq_try=1,
    ):  # fmt: skip
        with (
            tracing.storage_span("write", f"speech/{job_id}.wav", storage=Store()),
            tracing.mimo_call_span(MIMO_URL) as call,
        ):
            handed_on = tracing.current_traceparent()
            call.answered(status)
        tracing.note_outcome("succeeded" if status < 400 else "failed")
    assert handed_on is not None
    return handed_on


@pytest.fixture
def otlp(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
        monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
        yield receiver
    tracing.shutdown()


def test_the_sidecar_exports_every_span_with_the_ids_and_parents_the_worker_used(
    otlp: OtlpReceiver,
) -> None:
    assert tracing.setup_from_env("mimoq-worker", relay=True)
    handed_on = [one_job(f"job-{i}", status=200 if i else 503) for i in range(40)]
    tracing.shutdown()  # returns once the sidecar has exported and exited

    spans = otlp.spans
    assert len(spans) == 120
    assert {s.service for s in spans} == {"mimoq-worker"}
    assert {s.trace_id for s in spans} == {PARENT_TRACE}
    by_id = {s.span_id: s for s in spans}
    for i, traceparent in enumerate(handed_on):
        post = by_id[traceparent[36:52]]  # the span the callback's traceparent names
        assert (post.name, post.kind) == ("POST", "CLIENT")
        write = by_id[post.parent_span_id]
        attempt = by_id[write.parent_span_id]
        assert write.name == "storage write"
        assert (attempt.name, attempt.kind) == ("process mimoq:queue", "CONSUMER")
        assert attempt.parent_span_id == "00f067aa0ba902b7"  # the producer's
        assert attempt.attributes["messaging.message.id"] == f"job-{i}"
        assert attempt.attributes["mimoq.tenant"] == "t-a"
        assert post.attributes["url.full"] == MIMO_URL
        assert post.attributes["http.response.status_code"] == (503 if i == 0 else 200)
        assert post.status_code == (2 if i == 0 else 0)
        assert attempt.attributes["mimoq.job.outcome"] == ("failed" if i == 0 else "succeeded")


def test_a_dead_sidecar_is_logged_once_and_costs_the_jobs_nothing(otlp: OtlpReceiver) -> None:
    assert tracing.setup_from_env("mimoq-worker", relay=True)
    relay = tracing._relay
    assert relay is not None and relay._process is not None
    relay._process.kill()
    relay._process.wait()
    with structlog.testing.capture_logs() as logs:
        for i in range(3 * span_relay.MAX_FRAME_RECORDS):  # frames sent past the death
            one_job(f"job-{i}")
        tracing.shutdown()
    assert [e["event"] for e in logs if e["event"] == "tracing.sidecar_lost"] == [
        "tracing.sidecar_lost"
    ]
    assert otlp.spans == []


def test_the_sidecar_ignores_a_signal_to_the_process_group_and_exports_on_close(
    otlp: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C reaches the worker's whole process group: the sidecar must outlive it until
    the worker has closed its pipe, or the last jobs' spans are lost."""
    import signal

    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # export within 50 ms
    assert tracing.setup_from_env("mimoq-worker", relay=True)
    relay = tracing._relay
    assert relay is not None and relay._process is not None
    one_job("job-before")
    relay._wake.set()
    # its spans exported: the sidecar runs its loop, past setting its signal handlers
    otlp.wait_for(lambda spans: len(spans) == 3, what="the first job's spans")
    relay._process.send_signal(signal.SIGINT)
    relay._process.send_signal(signal.SIGTERM)
    one_job("job-after")
    tracing.shutdown()
    ids = {s.attributes.get("messaging.message.id") for s in otlp.spans}
    assert {"job-before", "job-after"} <= ids
    assert relay._process.returncode == 0


def test_a_full_queue_drops_new_spans_and_counts_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(span_relay, "MAX_QUEUED", 5)
    relay = span_relay.SpanRelay()  # no sink: records wait in the queue for a sidecar
    tracing.install_relay(relay, ALWAYS_ON)
    try:
        for i in range(4):
            one_job(f"job-{i}")  # 3 spans each
    finally:
        tracing.shutdown()
    assert len(relay._queue) == 5
    assert relay.dropped == 7


@pytest.mark.parametrize(
    "sampler",
    [
        ParentBased(ALWAYS_ON),
        ParentBased(ALWAYS_OFF),
        ParentBasedTraceIdRatio(0.3),
        TraceIdRatioBased(0.3),
        ALWAYS_ON,
        ALWAYS_OFF,
    ],
    ids=lambda sampler: sampler.get_description(),
)
def test_the_relay_samples_every_kind_of_parent_as_the_sdk_tracer_does(sampler: Sampler) -> None:
    sdk = TracerProvider(sampler=sampler, shutdown_on_exit=False).get_tracer("t")
    relay = span_relay.RelayTracer(span_relay.SpanRelay(sink=lambda records: None), sampler)
    rng = random.Random(7)
    for _ in range(400):
        root = relay.start_span("s")  # a root: the sampler sees the relay's own trace id
        expected = sampler.should_sample(None, root.get_span_context().trace_id, "s").decision
        assert root.is_recording() == expected.is_sampled()
        assert root.get_span_context().trace_flags.sampled == expected.is_sampled()
        trace_id = rng.getrandbits(128) or 1
        for remote in (True, False):
            for flags in (0, 1):
                above = SpanContext(trace_id, rng.getrandbits(64) or 1, is_remote=remote,
                                    trace_flags=TraceFlags(flags))  # fmt: skip
                parent = trace.set_span_in_context(NonRecordingSpan(above))
                ours, theirs = relay.start_span("s", parent), sdk.start_span("s", parent)
                assert ours.is_recording() == theirs.is_recording()
                assert ours.get_span_context().trace_flags == theirs.get_span_context().trace_flags
                assert ours.get_span_context().trace_id == trace_id
