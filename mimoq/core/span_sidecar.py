"""The process that makes a worker's relayed spans SDK spans and exports them.

Started by ``mimoq.core.span_relay.SpanRelay.start_sidecar`` with the worker's environment:
it sets the SDK up from the same ``OTEL_*`` variables (exporters, endpoint, headers,
``OTEL_BSP_*`` batching, the resource), reads frames of ``SpanRecord``s from its stdin
(a 4-byte big-endian length, then ``marshal`` data), and replays each record through the
SDK's tracer with the record's own ids, parent and times. It exits when its stdin closes
(the worker closing it, or dying), after exporting what it holds. Signals sent to the
worker's whole process group (Ctrl-C in a terminal) are left to the worker: the sidecar
ends when the worker does.

    python -m mimoq.core.span_sidecar SERVICE_NAME
"""

from __future__ import annotations

import marshal
import signal
import sys
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from mimoq.core.span_relay import SpanRecord

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.id_generator import IdGenerator


def preset_ids() -> IdGenerator:
    """An id generator that hands out the ids the record being replayed already has."""
    from opentelemetry.sdk.trace.id_generator import IdGenerator

    class PresetIds(IdGenerator):
        trace_id = 0
        span_id = 0

        def generate_trace_id(self) -> int:
            return self.trace_id

        def generate_span_id(self) -> int:
            return self.span_id

        def is_trace_id_random(self) -> bool:
            return True  # the worker draws them at random (span_relay._new_trace_id)

    return PresetIds()


def replaying_provider(**kwargs: object) -> tuple[TracerProvider, IdGenerator]:
    """A provider that records every span it is given (the worker sampled already) with
    preset ids; ``kwargs`` go to ``TracerProvider`` (its resource)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    ids = preset_ids()
    provider = TracerProvider(sampler=ALWAYS_ON, id_generator=ids, **kwargs)  # type: ignore[arg-type]
    return provider, ids


def replay_records(records: list[SpanRecord], tracer: trace.Tracer, ids: IdGenerator) -> None:
    """Make each record an SDK span with its own ids, parent, times, attributes and status."""
    for (name, kind, trace_id, span_id, parent_id, parent_flags, parent_remote, start, end,
         attributes, status, description) in records:  # fmt: skip
        context = None
        if parent_id:
            parent = SpanContext(
                trace_id, parent_id, is_remote=parent_remote, trace_flags=TraceFlags(parent_flags)
            )
            context = trace.set_span_in_context(NonRecordingSpan(parent))
        ids.trace_id, ids.span_id = trace_id, span_id  # type: ignore[attr-defined]
        span = tracer.start_span(
            name, context=context, kind=SpanKind(kind), attributes=attributes, start_time=start
        )
        if status != StatusCode.UNSET.value:
            span.set_status(Status(StatusCode(status), description))
        span.end(end_time=end)


def frames(stream: IO[bytes]) -> Iterator[list[SpanRecord]]:
    """The record lists on ``stream`` until it ends."""
    while True:
        head = stream.read(4)
        if len(head) < 4:
            return
        body = stream.read(int.from_bytes(head, "big"))
        # only this worker's own records come down this pipe (span_relay.SpanRelay._send)
        yield marshal.loads(body)  # noqa: S302


def sidecar_main(argv: list[str]) -> int:
    # The worker stops on Ctrl-C or SIGTERM and then closes this process's stdin: exiting
    # on the signal instead would lose the spans of the worker's last jobs.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from mimoq.core import tracing

    service = argv[0] if argv else "mimoq-worker"
    provider, ids = replaying_provider(resource=tracing.service_resource(service))
    tracing.add_exporters(provider)
    tracer = provider.get_tracer(tracing.INSTRUMENTATION)
    try:
        for records in frames(sys.stdin.buffer):
            replay_records(records, tracer, ids)
    finally:
        provider.force_flush()
        provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(sidecar_main(sys.argv[1:]))
