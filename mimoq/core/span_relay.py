"""A worker's spans, recorded in the worker and made by the SDK in a process of their own.

The OpenTelemetry SDK spends about 20 µs of Python to start and end one span and as much
again to encode it (``bench/throughput.py --tracing`` prints both): with the three spans of
every job, that is more than 2 % of a job's worker CPU before any attribute is set. A
worker therefore keeps, per span, only what the exported span is made of (its ids, name,
kind, times, attributes and status) in a plain tuple, and a thread hands these records to
``mimoq.core.span_sidecar``, a child process that makes each one the SDK's ``ReadableSpan``
with the same ids, parent and times and exports it through the SDK's BatchSpanProcessor
and OTLP exporter.

What stays in the worker is what the job itself needs: the sampler's decision (the SDK's
own sampler, read from ``OTEL_TRACES_SAMPLER`` as the SDK reads it), the span ids its
``traceparent`` carries to callbacks and chunk jobs, and the current span. A sampled-out
span is the API's ``NonRecordingSpan``, as the SDK makes it.

The relay never holds a job up: records wait in a bounded queue (``MAX_QUEUED``; a full
queue drops new records, counted, as the SDK's batch processor does), the pipe is written
by the relay's own thread, and a sidecar that dies is logged once and not waited for.
"""

from __future__ import annotations

import collections
import contextlib
import marshal
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.sampling import Sampler

log = structlog.get_logger("mimoq.tracing")

#: One finished span: (name, kind, trace id, span id, parent span id or 0, parent's trace
#: flags, parent is remote, start ns, end ns, attributes, status code, status description).
SpanRecord = tuple[str, int, int, int, int, int, bool, int, int, dict[str, Any], int, "str | None"]
#: Records held for the sidecar at most; past it new spans are dropped (and counted).
MAX_QUEUED: Final = 20_000
#: How often the relay's thread sends what has ended (seconds), at the latest.
SEND_INTERVAL_S: Final = 0.5
#: Records per frame at most: the sidecar exports a frame at a time.
MAX_FRAME_RECORDS: Final = 2_000
#: How long ``close`` waits for the sidecar to export what it was sent.
CLOSE_TIMEOUT_S: Final = 15.0
_SAMPLED: Final = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED: Final = TraceFlags(TraceFlags.DEFAULT)
#: A new span's flags by (sampled, random trace id), made once: not per span.
_FLAGS: Final = {
    (sampled, random_id): TraceFlags(
        (TraceFlags.SAMPLED if sampled else 0) | (TraceFlags.RANDOM_TRACE_ID if random_id else 0)
    )
    for sampled in (True, False)
    for random_id in (True, False)
}

Sink = Callable[[list[SpanRecord]], None]


class RelaySpan(trace.Span):
    """A recording span of the OpenTelemetry API whose ``end`` hands a ``SpanRecord`` to
    its relay. Exceptions are never recorded as events: mimoq notes their type only."""

    __slots__ = ("_context", "_end", "_kind", "_name", "_parent", "_relay", "_start",
                 "_status", "attributes")  # fmt: skip

    def __init__(
        self,
        relay: SpanRelay,
        name: str,
        kind: SpanKind,
        span_context: SpanContext,
        parent: SpanContext | None,
        attributes: Mapping[str, Any] | None,
    ) -> None:
        self._relay = relay
        self._name = name
        self._kind = kind.value
        self._context = span_context
        self._parent = parent
        self._start = time.time_ns()
        self._end: int | None = None
        self._status: tuple[int, str | None] = (StatusCode.UNSET.value, None)
        self.attributes: dict[str, Any] = dict(attributes) if attributes else {}

    def get_span_context(self) -> SpanContext:
        return self._context

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self._end is None:
            self.attributes.update(attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        if self._end is None and value is not None:
            self.attributes[key] = value

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        return None  # mimoq adds no events; an instrumented library's are not kept

    def update_name(self, name: str) -> None:
        if self._end is None:
            self._name = name

    def is_recording(self) -> bool:
        return self._end is None

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._end is not None:
            return
        if isinstance(status, Status):
            code, description = status.status_code, status.description
        else:
            code = status
        if code is StatusCode.UNSET or self._status[0] == StatusCode.OK.value:
            return  # as in the SDK: UNSET changes nothing, OK is final
        self._status = (code.value, description if code is StatusCode.ERROR else None)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Any = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        return None  # an exception's text may quote a secret: only its type is noted

    def end(self, end_time: int | None = None) -> None:
        if self._end is not None:
            return
        self._end = end_time or time.time_ns()
        parent = self._parent
        self._relay.add(
            (
                self._name,
                self._kind,
                self._context.trace_id,
                self._context.span_id,
                parent.span_id if parent is not None else 0,
                int(parent.trace_flags) if parent is not None else 0,
                bool(parent.is_remote) if parent is not None else False,
                self._start,
                self._end,
                self.attributes,
                self._status[0],
                self._status[1],
            )
        )


class RelayTracer:
    """``start_span`` as the SDK's tracer does it (the same sampler, parent and ids), making
    a ``RelaySpan`` where the SDK would make a recording span."""

    def __init__(self, relay: SpanRelay, sampler: Sampler) -> None:
        self._relay = relay
        self.sampler = sampler
        self._by_parent = _parent_decisions(sampler)

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
    ) -> trace.Span:
        parent = trace.get_current_span(context).get_span_context()
        known = None
        if parent.is_valid:
            trace_id, above = parent.trace_id, parent
            known = self._by_parent.get((parent.is_remote, parent.trace_flags.sampled))
        else:
            trace_id, above = _new_trace_id(), None
        trace_state: TraceState | None
        if known is not None:  # the sampler's constant answer for this kind of parent
            recording, trace_state = known, parent.trace_state
        else:
            sampled = self.sampler.should_sample(context, trace_id, name, kind, attributes)
            recording = sampled.decision.is_sampled()  # type: ignore[no-untyped-call]
            trace_state = sampled.trace_state
        # the SDK's W3C "random trace id" flag: set on a root (ids here are random),
        # inherited from a parent
        flags = _FLAGS[recording, above is None or above.trace_flags.random_trace_id]
        span_context = SpanContext(
            trace_id,
            _new_span_id(),
            is_remote=False,
            trace_flags=flags,
            trace_state=trace_state,
        )
        if not recording:
            return NonRecordingSpan(span_context)
        return RelaySpan(self._relay, name, kind, span_context, above, attributes)


def _parent_decisions(sampler: Sampler) -> dict[tuple[bool, bool], bool]:
    """Whether ``sampler`` samples a child, per kind of parent (remote or local, sampled or
    not), where that answer is the same for every trace: a parent-based sampler's delegates
    for a parent are ``always_on`` and ``always_off`` for every sampler OTEL_TRACES_SAMPLER
    names (only its root delegate may be a ratio). The SDK's sampler costs about a third of
    a relayed span; a kind it answers differently for two trace ids is asked every time."""
    from opentelemetry.sdk.trace.sampling import ParentBased

    if not isinstance(sampler, ParentBased):
        return {}
    known: dict[tuple[bool, bool], bool] = {}
    for remote in (True, False):
        for sampled in (True, False):
            flags = _SAMPLED if sampled else _NOT_SAMPLED
            answers = set()
            for trace_id in (1, (1 << 128) - 1):  # a ratio keeps the first, drops the second
                parent = SpanContext(trace_id, 1, is_remote=remote, trace_flags=flags)
                probe = trace.set_span_in_context(NonRecordingSpan(parent))
                decision = sampler.should_sample(probe, trace_id, "probe").decision
                answers.add((decision.is_recording(), decision.is_sampled()))  # type: ignore[no-untyped-call]
            if len(answers) == 1:
                recording, is_sampled = answers.pop()
                if recording == is_sampled:  # RECORD_ONLY is left to the sampler itself
                    known[(remote, sampled)] = is_sampled
    return known


def _new_trace_id() -> int:
    # the SDK's RandomIdGenerator: 128 random bits, never the invalid id 0
    while True:
        value = random.getrandbits(128)
        if value:
            return value


def _new_span_id() -> int:
    while True:
        value = random.getrandbits(64)
        if value:
            return value


class SpanRelay:
    """The queue of ended spans and what takes them: ``sink`` (a callable, in-process) or
    the sidecar (``start_sidecar``), fed by the relay's thread."""

    def __init__(self, sink: Sink | None = None) -> None:
        self._sink = sink
        self._queue: collections.deque[SpanRecord] = collections.deque()
        self.dropped = 0
        self._wake = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._lost = False

    # --- the worker's side: called where spans end -------------------------------------

    def add(self, record: SpanRecord) -> None:
        if self._sink is not None and self._thread is None:
            self._sink([record])  # in-process and synchronous (tests)
            return
        if len(self._queue) >= MAX_QUEUED:
            self.dropped += 1
            return
        self._queue.append(record)
        if len(self._queue) == MAX_FRAME_RECORDS:  # a full frame: send it now
            self._wake.set()

    # --- the sidecar ------------------------------------------------------------------

    def start_sidecar(self, default_service: str, env: Mapping[str, str] | None = None) -> None:
        """Start ``mimoq.core.span_sidecar`` with ``env`` (default: this process's
        environment), where it reads its ``OTEL_*`` set-up, and the thread that feeds it.
        Its stdout and stderr are this process's (the console exporter)."""
        self._process = subprocess.Popen(  # noqa: S603 (this interpreter, our own module)
            [sys.executable, "-m", "mimoq.core.span_sidecar", default_service],
            stdin=subprocess.PIPE,
            env=dict(os.environ if env is None else env),
        )
        self._thread = threading.Thread(target=self._feed, name="mimoq-span-relay", daemon=True)
        self._thread.start()

    def _feed(self) -> None:
        while True:
            self._wake.wait(SEND_INTERVAL_S)
            self._wake.clear()
            closing = self._closing
            while self._queue:
                self._send(self._take(MAX_FRAME_RECORDS))
            if closing:
                return

    def _take(self, limit: int) -> list[SpanRecord]:
        queue, taken = self._queue, list[SpanRecord]()
        while queue and len(taken) < limit:
            taken.append(queue.popleft())
        return taken

    def _send(self, records: Sequence[SpanRecord]) -> None:
        process = self._process
        if self._lost or process is None or process.stdin is None:
            return
        frame = marshal.dumps(list(records))
        try:
            process.stdin.write(len(frame).to_bytes(4, "big") + frame)
            process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            self._lost = True
            log.error(
                "tracing.sidecar_lost",
                returncode=process.poll(),
                hint="spans are no longer exported; jobs are not affected",
            )

    def close(self) -> None:
        """Send what is queued, then let the sidecar export it and exit (bounded wait)."""
        thread, process = self._thread, self._process
        if thread is None:
            return
        self._closing = True
        self._wake.set()
        thread.join(CLOSE_TIMEOUT_S)
        if process is not None:
            if process.stdin is not None:
                with contextlib.suppress(OSError):  # a dead sidecar's pipe
                    process.stdin.close()
            try:
                process.wait(CLOSE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.dropped:
            log.warning("tracing.spans_dropped", dropped=self.dropped, queue_max=MAX_QUEUED)
