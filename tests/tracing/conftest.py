"""Tracing fixtures: an in-memory span exporter, and the end-to-end fixtures (private
redis-server, simulator, worker, callback receiver) reused from tests/e2e."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mimoq.core import span_sidecar, tracing
from mimoq.core.span_relay import SpanRelay
from tests.e2e.conftest import (  # noqa: F401 (fixtures)
    producer,
    receiver,
    settings,
    sim,
    sim_server,
    worker,
)


class Spans:
    """The finished spans of this test, by name and by relation."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self.exporter = exporter

    def all(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str, job_id: str | None = None) -> list[ReadableSpan]:
        return [
            s
            for s in self.all()
            if s.name == name
            and (
                job_id is None
                or (s.attributes or {}).get("messaging.message.id") == job_id
                or (s.attributes or {}).get("mimoq.job.id") == job_id
            )
        ]

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        parent_id = parent.context.span_id
        return [s for s in self.all() if s.parent is not None and s.parent.span_id == parent_id]


@pytest.fixture(params=["sdk", "relay"])
def spans(request: pytest.FixtureRequest) -> Iterator[Spans]:
    """Tracing on for this test, every span kept in memory (exported as it ends): made by
    the SDK's tracer (as producers and ``mimoq serve`` do), or recorded by the relay and
    made SDK spans from its records by the sidecar's code (as a worker and its sidecar do),
    at once."""
    exporter = InMemorySpanExporter()
    resource = Resource({"service.name": "mimoq-test"})
    if request.param == "sdk":
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracing.install(provider)
    else:
        processors = [SimpleSpanProcessor(exporter)]
        relay = SpanRelay(
            sink=lambda records: span_sidecar.export_records(records, processors, resource)
        )
        tracing.install_relay(relay, TracerProvider().sampler)
    try:
        yield Spans(exporter)
    finally:
        tracing.shutdown()
