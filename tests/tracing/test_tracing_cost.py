"""What the cheaper span path must still do: the current span restored on every exit, no
None attributes, shared attribute dicts never changed by one job, and a resource hashed once
for the exporter (not once per span)."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk import resources
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBasedTraceIdRatio
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from mimoq.core import tracing
from tests.tracing.conftest import Spans

MIMO_URL = "http://127.0.0.1:8000/v1/chat/completions"
PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_span_is_current_only_inside_its_block_even_when_it_raises(spans: Spans) -> None:
    with tracing.attempt_span(
        "job-1", {"traceparent": PARENT}, "speech", destination="q", arq_try=1
    ):
        attempt = trace.get_current_span()
        with pytest.raises(RuntimeError), tracing.mimo_call_span(MIMO_URL):
            assert trace.get_current_span() is not attempt
            raise RuntimeError("sk-the-message-may-quote-a-key")
        assert trace.get_current_span() is attempt
    assert not trace.get_current_span().get_span_context().is_valid

    (post,) = spans.named("POST")
    (process,) = spans.named("process q")
    assert post.end_time is not None and process.end_time is not None
    assert post.parent is not None and post.parent.span_id == process.context.span_id
    assert process.parent is not None and f"{process.parent.span_id:016x}" == PARENT[36:52]
    assert (post.attributes or {})["error.type"] == "RuntimeError"
    assert post.status.description == "RuntimeError" and not post.events


def test_unknown_attributes_are_left_out_and_a_resend_does_not_leak_into_the_next_job(
    spans: Spans, caplog: pytest.LogCaptureFixture
) -> None:
    """The MiMo span's attributes are built once per URL and shared: a second try's resend
    count must not stay on them for the next job's first try."""
    for job_id, tries in (("job-1", 2), ("job-2", 1)):
        with tracing.attempt_span(job_id, {}, "speech", destination="q", arq_try=tries):
            tracing.note_try(tries)
            with tracing.mimo_call_span(MIMO_URL) as call:
                call.answered(200)
    first, second = spans.named("POST")
    assert (first.attributes or {})["http.request.resend_count"] == 1
    assert "http.request.resend_count" not in (second.attributes or {})
    assert (second.attributes or {})["url.full"] == MIMO_URL
    for span in spans.named("process q"):
        attributes = span.attributes or {}
        assert "mimoq.tenant" not in attributes and "mimoq.model" not in attributes
        assert attributes["mimoq.job.kind"] == "speech"
    assert not [r for r in caplog.records if "Invalid type" in r.getMessage()]


def test_the_exported_resource_is_hashed_once_not_per_span(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The OTLP encoder hashes the resource of every span it encodes; a plain Resource
    JSON-dumps its attributes for each hash."""
    dumped: list[Any] = []
    real_dumps = resources.dumps

    def counting_dumps(*args: Any, **kwargs: Any) -> str:
        dumped.append(args[0])
        return real_dumps(*args, **kwargs)

    monkeypatch.setattr(resources, "dumps", counting_dumps)
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    resource = tracing.service_resource("mimoq-test")
    assert resource.attributes["service.name"] == "mimoq-test"
    plain = resources.Resource(resource.attributes, resource.schema_url)
    assert resource == plain and hash(resource) == hash(plain)  # the same export groups

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    for _ in range(50):
        tracer.start_span("s").end()
    dumped.clear()
    request = encode_spans(exporter.get_finished_spans())
    assert (
        len(request.resource_spans) == 1
        and len(request.resource_spans[0].scope_spans[0].spans) == 50
    )
    assert dumped == []
    provider.shutdown()


@pytest.mark.parametrize(
    "traceparent",
    [
        PARENT,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",  # not sampled
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03",  # random trace id flag
    ],
)
def test_a_traceparent_is_read_and_written_as_the_w3c_propagator_does(traceparent: str) -> None:
    """mimoq parses and formats the header itself (once per job, no carrier): the context
    and the header must be the propagator's own."""
    w3c = TraceContextTextMapPropagator()
    expected = trace.get_current_span(w3c.extract({"traceparent": traceparent}))
    with tracing.continued_from(traceparent):
        assert trace.get_current_span().get_span_context() == expected.get_span_context()
        assert tracing.current_traceparent() == traceparent
        carrier: dict[str, str] = {}
        w3c.inject(carrier)
        assert carrier == {"traceparent": traceparent}
    assert tracing.current_traceparent() is None


class _Local:
    def is_local(self) -> bool:
        return True

    def url(self, key: str) -> str:
        return "file:///" + key


def _job_hooks(traceparent: str) -> dict[str, str | None]:
    """Every span helper a job with a callback passes through, as the worker calls them;
    returns the traceparent each stage hands on."""
    handed: dict[str, str | None] = {}
    fields = {"id": "job-1", "kind": "speech", "traceparent": traceparent}
    with tracing.producer_span(fields, destination="q") as enqueue:
        handed["job"] = enqueue.traceparent
    with tracing.attempt_span("job-1", fields, "speech", destination="q", arq_try=1):
        tracing.note_try(1)
        with (
            tracing.storage_span("write", "speech/job-1.wav", storage=_Local()),
            tracing.mimo_call_span(MIMO_URL) as call,
        ):
            call.answered(200)
        tracing.note_outcome("succeeded")
        handed["callback"] = tracing.current_traceparent()
    headers: dict[str, str] = {}
    with tracing.callback_span(traceparent, url="http://h", delivery_id="d", job_id="j", attempt=1):
        tracing.add_traceparent(headers, traceparent)
    handed["receiver"] = headers.get("traceparent")
    return handed


def _install(sampler: Any) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    return exporter


def test_a_trace_the_sampler_left_out_makes_no_span_and_hands_its_parent_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under a parent-based sampler, a job whose traceparent is not sampled costs no span
    (the sampler is not even asked); a sampled one under the same sampler is traced."""
    sampler = ParentBasedTraceIdRatio(0.5)
    exporter = _install(sampler)
    asked: list[Any] = []
    real = sampler.should_sample
    monkeypatch.setattr(sampler, "should_sample", lambda *a, **k: asked.append(a) or real(*a, **k))
    unsampled = PARENT[:-2] + "00"
    try:
        handed = _job_hooks(unsampled)
        assert asked == [] and not exporter.get_finished_spans()
        assert handed == {"job": unsampled, "callback": unsampled, "receiver": unsampled}

        _job_hooks(PARENT)
        names = sorted(s.name for s in exporter.get_finished_spans())
        assert names == ["POST", "POST callback", "process q", "send q", "storage write"]
    finally:
        tracing.shutdown()


def test_a_sampler_that_keeps_children_of_unsampled_parents_still_gets_them() -> None:
    exporter = _install(ALWAYS_ON)
    unsampled = PARENT[:-2] + "00"
    try:
        handed = _job_hooks(unsampled)
    finally:
        tracing.shutdown()
    spans = exporter.get_finished_spans()
    assert len(spans) == 5
    assert {f"{s.context.trace_id:032x}" for s in spans} == {PARENT[3:35]}
    assert handed["callback"] != unsampled  # the attempt span's own context
