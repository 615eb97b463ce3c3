"""The process that makes a worker's relayed spans SDK spans and exports them.

Started by ``mimoq.core.span_relay.SpanRelay.start_sidecar`` with the worker's environment:
it sets the SDK's exporters up from the same ``OTEL_*`` variables (exporters, endpoint,
headers, ``OTEL_BSP_*`` batching, the resource), reads frames of ``SpanRecord``s from its
stdin (a 4-byte big-endian length, then ``marshal`` data), makes each record the SDK's
``ReadableSpan`` (what the SDK's tracer hands its span processors when a span ends) with
the record's own ids, parent, times, attributes and status, and hands it to the SDK's
batch span processors, whose OTLP exporter encodes and sends it.

It exits when its stdin closes (the worker closing it, or dying), after exporting what it
holds. Signals sent to the worker's whole process group (Ctrl-C in a terminal) are left to
the worker: the sidecar ends when the worker does.

    python -m mimoq.core.span_sidecar SERVICE_NAME
"""

from __future__ import annotations

import marshal
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import IO, TYPE_CHECKING, Final

from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from mimoq.core.span_relay import SpanRecord

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

_KINDS: Final = {kind.value: kind for kind in SpanKind}
_UNSET: Final = Status(StatusCode.UNSET)


def readable_spans(records: Sequence[SpanRecord], resource: Resource) -> Iterator[ReadableSpan]:
    """Each record as the SDK's ``ReadableSpan``: its ids, parent, times, attributes and
    status, its flags as the SDK's tracer sets them (sampled: the worker relays only sampled
    spans; "random trace id" on a root, else the parent's), the instrumentation scope the
    worker's tracer would have had."""
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from mimoq.core.tracing import INSTRUMENTATION

    scope = InstrumentationScope(INSTRUMENTATION)
    for (name, kind, trace_id, span_id, parent_id, parent_flags, parent_remote, start, end,
         attributes, status, description) in records:  # fmt: skip
        parent = None
        flags = TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID
        if parent_id:
            parent = SpanContext(
                trace_id, parent_id, is_remote=parent_remote, trace_flags=TraceFlags(parent_flags)
            )
            flags = TraceFlags.SAMPLED | (parent_flags & TraceFlags.RANDOM_TRACE_ID)
        yield ReadableSpan(
            name=name,
            context=SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(flags)),
            parent=parent,
            resource=resource,
            attributes=attributes,
            kind=_KINDS[kind],
            status=_UNSET
            if status == StatusCode.UNSET.value
            else Status(StatusCode(status), description),
            start_time=start,
            end_time=end,
            instrumentation_scope=scope,
        )


def export_records(
    records: Sequence[SpanRecord], processors: Sequence[SpanProcessor], resource: Resource
) -> None:
    """Hand each record, made a ``ReadableSpan``, to every processor as an ended span."""
    for span in readable_spans(records, resource):
        for processor in processors:
            processor.on_end(span)


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

    resource = tracing.service_resource(argv[0] if argv else "mimoq-worker")
    processors = tracing.span_processors()
    try:
        for records in frames(sys.stdin.buffer):
            export_records(records, processors, resource)
    finally:
        for processor in processors:
            processor.force_flush()
            processor.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(sidecar_main(sys.argv[1:]))
