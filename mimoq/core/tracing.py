"""OpenTelemetry tracing: off unless the standard ``OTEL_*`` variables turn it on.

One trace per job: the producer's PRODUCER span (``send mimoq:queue``) puts its W3C trace
context in the job's ``traceparent`` field; each worker attempt is a CONSUMER span
(``process mimoq:queue``, messaging semantic conventions) that is a child of it; under the
attempt, a CLIENT span for the MiMo call, one for the storage write, and — in the callback's
own delivery job — a CLIENT span for each callback POST, whose ``traceparent`` header
carries the trace on into the receiver.

A worker records its spans as plain records and a sidecar process makes them SDK spans and
exports them (``span_relay``, ``span_sidecar``): the SDK's own cost per span would be more
than 2 % of a job. Producers, the CLI and ``mimoq serve`` use the SDK's tracer in-process.

Off (the default), no SDK is imported and no span is built: every helper here returns at
its first line, except that a job's own ``traceparent`` is still handed on, unchanged, to
its callback. On, a job whose trace a parent-based sampler left out builds no span either:
its ``traceparent`` (not sampled) is handed on the same way. Attributes never hold a
secret: URLs are stripped of userinfo and query,
headers are never recorded, and exceptions are recorded by their error type only (an
upstream message could echo a key back).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from mimoq.core.errors import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.sampling import Sampler

    from mimoq.core.span_relay import SpanRelay

#: W3C Trace Context, version 00 (https://www.w3.org/TR/trace-context/#traceparent-header):
#: ``00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>``, lower case, ids not all 0.
TRACEPARENT_PATTERN: Final = r"^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$"
_TRACEPARENT = re.compile(TRACEPARENT_PATTERN)
TRACEPARENT_FORM: Final = (
    "00-<32 lower-case hex trace id>-<16 lower-case hex span id>-<2 hex flags>, e.g. "
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
)
MESSAGING_SYSTEM: Final = "mimoq"
INSTRUMENTATION: Final = "mimoq"
_Value = TypeVar("_Value")  # what a span block hands its ``with``
#: Exporters ``OTEL_TRACES_EXPORTER`` may name.
EXPORTERS: Final = ("otlp", "console", "none")


class _SpanStarter(Protocol):
    """The SDK's tracer, or the relay's (``span_relay.RelayTracer``)."""

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = ...,
        kind: SpanKind = ...,
        attributes: Mapping[str, Any] | None = ...,
    ) -> trace.Span: ...


_provider: TracerProvider | None = None
_relay: SpanRelay | None = None
_tracer: _SpanStarter | None = None
#: The sampler drops the children of an unsampled span: then mimoq makes none (_left_out).
_skip_unsampled = False
#: The job's own traceparent while an attempt runs: what its callback carries when off.
_job_traceparent: ContextVar[str | None] = ContextVar("mimoq_job_traceparent", default=None)
#: The try number of the attempt running in this task (for the MiMo span's resend count).
_job_try: ContextVar[int] = ContextVar("mimoq_job_try", default=1)


def valid_traceparent(value: object) -> bool:
    """Whether ``value`` is a W3C ``traceparent`` (version 00) mimoq accepts."""
    return isinstance(value, str) and _TRACEPARENT.fullmatch(value) is not None


def is_on() -> bool:
    return _tracer is not None


# --- set-up -------------------------------------------------------------------------------


def exporters_from_env(env: Mapping[str, str]) -> tuple[str, ...]:
    """The exporters the environment asks for; () when tracing stays off.

    On when ``OTEL_TRACES_EXPORTER`` names ``otlp`` or ``console``, or when an OTLP endpoint
    is set without it; off when it is ``none``, when nothing is set, or with
    ``OTEL_SDK_DISABLED=true``. Refuses (ConfigurationError) what mimoq cannot export.
    """
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ()
    named = [e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",")]
    named = [e for e in named if e]
    for exporter in named:
        if exporter not in EXPORTERS:
            raise ConfigurationError(
                f"OTEL_TRACES_EXPORTER={exporter!r} is not supported: use otlp (OTLP over "
                "HTTP), console, or none"
            )
    if not named and (
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        named = ["otlp"]
    chosen = tuple(e for e in named if e != "none")
    if "otlp" in chosen:
        for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            protocol = env.get(name, "").strip()
            if protocol and protocol != "http/protobuf":
                raise ConfigurationError(
                    f"{name}={protocol!r} is not supported: mimoq exports OTLP over HTTP "
                    "(http/protobuf); point OTEL_EXPORTER_OTLP_ENDPOINT at the collector's "
                    "HTTP port (4318) and unset the variable"
                )
    return chosen


def setup_from_env(
    default_service: str, env: Mapping[str, str] | None = None, *, relay: bool = False
) -> bool:
    """Start tracing if the environment asks for it; returns whether it is on.

    ``default_service`` names the process when neither ``OTEL_SERVICE_NAME`` nor
    ``OTEL_RESOURCE_ATTRIBUTES`` does. The sampler comes from ``OTEL_TRACES_SAMPLER`` (and
    its argument), the batching from ``OTEL_BSP_*``, as the SDK reads them. ``relay``
    (workers): spans are recorded here and made and exported by the SDK in a sidecar
    process (``mimoq.core.span_relay`` says why).
    """
    exporters = exporters_from_env(os.environ if env is None else env)
    if not exporters:
        return False
    try:
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:  # pragma: no cover - the [otel] extra is not installed
        raise ConfigurationError(
            "OTEL_* variables turn tracing on, but the OpenTelemetry SDK is not installed: "
            "pip install 'mimoq[otel]' (or unset OTEL_TRACES_EXPORTER and "
            "OTEL_EXPORTER_OTLP_ENDPOINT)"
        ) from None
    if relay:
        from mimoq.core.span_relay import SpanRelay

        # the sampler OTEL_TRACES_SAMPLER names, as the SDK's provider reads it
        sampler = TracerProvider(shutdown_on_exit=False).sampler
        span_relay = SpanRelay()
        span_relay.start_sidecar(default_service, env)
        install_relay(span_relay, sampler)
        return True
    provider = TracerProvider(resource=service_resource(default_service))
    for processor in span_processors(exporters):
        provider.add_span_processor(processor)
    install(provider)
    return True


def span_processors(exporters: Sequence[str] | None = None) -> list[SpanProcessor]:
    """A batch span processor for each exporter (default: the environment's), each
    configured by the SDK from ``OTEL_*`` (endpoint, headers, ``OTEL_BSP_*``)."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    processors: list[SpanProcessor] = []
    for name in exporters_from_env(os.environ) if exporters is None else exporters:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            processors.append(BatchSpanProcessor(OTLPSpanExporter()))
        else:
            processors.append(BatchSpanProcessor(ConsoleSpanExporter()))
    return processors


def service_resource(default_service: str) -> Resource:
    """The process's resource as the SDK reads it from ``OTEL_SERVICE_NAME`` and
    ``OTEL_RESOURCE_ATTRIBUTES``, named ``default_service`` when they do not name it."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: default_service}))
    return _hashed_once(resource)


def _hashed_once(resource: Resource) -> Resource:
    """``resource`` with its hash computed once, not per exported span.

    The OTLP encoder groups each batch's spans by resource, hashing it once per span, and
    ``Resource.__hash__`` JSON-dumps every attribute each time: about 10 µs a span, a
    quarter of the export thread's encoding work. A resource never changes once made.
    """
    from opentelemetry.sdk.resources import Resource

    class HashedOnce(Resource):
        @functools.cached_property
        def _hash(self) -> int:
            return super().__hash__()

        def __hash__(self) -> int:
            return self._hash

    return HashedOnce(resource.attributes, resource.schema_url)


def install(provider: TracerProvider) -> None:
    """Trace through ``provider`` (set-up above; tests pass one with an in-memory exporter)."""
    global _provider, _tracer, _skip_unsampled
    _provider = provider
    _tracer = provider.get_tracer(INSTRUMENTATION)
    _skip_unsampled = _drops_children_of_unsampled(provider.sampler)


def install_relay(relay: SpanRelay, sampler: Sampler) -> None:
    """Trace through ``relay``, sampling with ``sampler`` (set-up above; tests pass a relay
    that replays into an in-memory exporter)."""
    global _relay, _tracer, _skip_unsampled
    from mimoq.core.span_relay import RelayTracer

    _relay = relay
    _tracer = RelayTracer(relay, sampler)
    _skip_unsampled = _drops_children_of_unsampled(sampler)


def _drops_children_of_unsampled(sampler: Sampler) -> bool:
    """Whether ``sampler`` drops every span whose parent was not sampled, remote or local.

    Every parent-based sampler ``OTEL_TRACES_SAMPLER`` names does (and always_off drops
    everything); always_on and traceidratio do not. A probe per kind of parent is enough:
    these samplers decide on the parent's flag and, for a ratio, on the trace id (id 1 is
    one any ratio keeps), never at random.
    """
    for remote in (True, False):
        parent = SpanContext(1, 1, is_remote=remote, trace_flags=TraceFlags(TraceFlags.DEFAULT))
        probe = trace.set_span_in_context(NonRecordingSpan(parent), otel_context.Context())
        decision = sampler.should_sample(probe, 1, "probe").decision
        if decision.is_recording():  # type: ignore[no-untyped-call]
            return False
    return True


def shutdown() -> None:
    """Export what is buffered and turn tracing off (the CLI calls it before it exits)."""
    global _provider, _tracer, _relay
    provider, _provider, _tracer = _provider, None, None
    relay, _relay = _relay, None
    if provider is not None:
        provider.force_flush()
        provider.shutdown()
    if relay is not None:
        relay.close()


# --- propagation --------------------------------------------------------------------------


# A job carries a traceparent and nothing else of the W3C headers (no tracestate), and
# TRACEPARENT_PATTERN is stricter than the W3C propagator's parser: the two helpers below read
# and write the header directly, as the propagator would, without its carrier, getter and
# second parse on every job.


def _context_of(traceparent: str | None) -> otel_context.Context | None:
    """The context whose current span is the remote parent ``traceparent`` names (None if
    it is not a valid one): what ``TraceContextTextMapPropagator.extract`` returns for it."""
    if traceparent is None or not valid_traceparent(traceparent):
        return None
    return _parsed(traceparent)


def _parsed(traceparent: str) -> otel_context.Context:
    """``_context_of`` for a ``traceparent`` already known to be valid."""
    parent = SpanContext(
        trace_id=int(traceparent[3:35], 16),
        span_id=int(traceparent[36:52], 16),
        is_remote=True,
        trace_flags=TraceFlags(int(traceparent[53:55], 16)),
    )
    return trace.set_span_in_context(NonRecordingSpan(parent), otel_context.Context())


def current_traceparent() -> str | None:
    """The active span's W3C context (a span of ours, or one the caller's own OpenTelemetry
    set-up made current); with tracing off inside an attempt, the job's own."""
    current = trace.get_current_span().get_span_context()
    if current.is_valid:
        return f"00-{current.trace_id:032x}-{current.span_id:016x}-{current.trace_flags:02x}"
    return _job_traceparent.get() if _tracer is None else None


def add_traceparent(headers: MutableMapping[str, str], fallback: str | None) -> None:
    """Set ``traceparent`` on an outgoing request: the active span's, else ``fallback``."""
    value = current_traceparent() if _tracer is not None else None
    value = value or (fallback if valid_traceparent(fallback) else None)
    if value is None:
        return
    for name in [n for n in headers if n.lower() == "traceparent"]:
        del headers[name]
    headers["traceparent"] = value


@contextlib.contextmanager
def continued_from(traceparent: str | None) -> Iterator[None]:
    """Make a caller's ``traceparent`` header the current context (``mimoq serve``).

    A malformed header is ignored, as the W3C specification asks of a receiver: the work
    simply starts a trace of its own.
    """
    ctx = _context_of(traceparent)
    if ctx is None:
        yield
        return
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


# --- spans --------------------------------------------------------------------------------
#
# Each helper below returns a small context-manager object rather than being a
# ``@contextlib.contextmanager`` generator: a job passes through four of them (five with a
# callback), and a generator-based one costs a generator, a wrapper object and two
# ``next``/``throw`` round trips each time, on top of the SDK's own span.


@functools.lru_cache(maxsize=256)
def safe_url(url: str) -> str:
    """``url`` without userinfo, query or fragment (any of them may hold a token)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid url>"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@functools.lru_cache(maxsize=256)  # a worker calls one MiMo URL; callbacks a few hosts
def _server_of(url: str) -> tuple[tuple[str, Any], ...]:
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
        host = parts.hostname
    except ValueError:
        return ()
    return (("server.address", host), ("server.port", port)) if host else ()


def _fail(span: trace.Span, error_type: str) -> None:
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, error_type))


def _error_type(exc: BaseException) -> str:
    return str(getattr(exc, "error_type", None) or type(exc).__name__)


def _left_out(parent: otel_context.Context | None = None) -> bool:
    """Whether no span is made under ``parent`` (else the current span): the sampler left
    its trace out and would drop the new span too.

    The SDK would still make a span that records nothing, and mimoq its attributes: a
    quarter of a recorded span's cost, for nothing. Instead the parent stays current, so
    its traceparent, flagged not sampled, is what a callback or a chunk job carries on.
    """
    if not _skip_unsampled:
        return False
    above = trace.get_current_span(parent)
    context = above.get_span_context()
    if context.trace_flags.sampled or not context.is_valid:
        return False
    return not above.is_recording()


class _Plain(Generic[_Value]):
    """A block that makes no span: it only hands ``value`` to the ``with``."""

    __slots__ = ("_value",)

    def __init__(self, value: _Value) -> None:
        self._value = value

    def __enter__(self) -> _Value:
        return self._value

    def __exit__(self, *exc_info: object) -> None:
        return None


class _Parented(Generic[_Value]):
    """A block under ``context`` made current (a left-out trace's parent): no span."""

    __slots__ = ("_context", "_token", "_value")

    def __init__(self, context: otel_context.Context | None, value: _Value) -> None:
        self._context = context
        self._value = value
        self._token: Token[otel_context.Context] | None = None

    def __enter__(self) -> _Value:
        if self._context is not None:
            self._token = otel_context.attach(self._context)
        return self._value

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            otel_context.detach(self._token)


class _Spanned(Generic[_Value]):
    """A block whose current span is ``span``; an escaping exception is recorded on it by
    its type only, then the span ends.

    The span is started by the caller, with its parent context passed explicitly, and made
    current here by hand: ``start_as_current_span`` would wrap this in two more context
    managers of its own on every span of every job, for the same result.
    """

    __slots__ = ("_span", "_token", "_value")

    def __init__(self, span: trace.Span, value: _Value) -> None:
        self._span = span
        self._value = value
        self._token: Token[otel_context.Context] | None = None

    def __enter__(self) -> _Value:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._value

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        span = self._span
        if exc is not None:
            # An outcome already noted (a retry, a deferral) says what the exception means.
            noted = getattr(span, "attributes", None) or {}
            if "error.type" not in noted and "mimoq.job.outcome" not in noted:
                _fail(span, _error_type(exc))
        if self._token is not None:
            otel_context.detach(self._token)
        span.end()


_NOTHING: Final = _Plain(None)


def _start(
    name: str,
    kind: SpanKind,
    attributes: Mapping[str, Any],
    parent: otel_context.Context | None = None,
) -> trace.Span:
    """A started span; ``attributes`` must hold no None (the SDK warns for each)."""
    assert _tracer is not None
    return _tracer.start_span(name, context=parent, kind=kind, attributes=attributes)


def _with_job(attributes: dict[str, Any], fields: Mapping[str, Any], kind: Any) -> dict[str, Any]:
    """``attributes`` plus the job's kind, model, lane and tenant (those it has)."""
    attributes["mimoq.lane"] = fields.get("priority") or "interactive"
    if kind is not None:
        attributes["mimoq.job.kind"] = kind
    model = fields.get("model")
    if model is not None:
        attributes["mimoq.model"] = model
    tenant = fields.get("tenant")
    if tenant is not None:
        attributes["mimoq.tenant"] = tenant
    return attributes


@dataclass
class Enqueue:
    """What the producer's span gives the job: the ``traceparent`` to carry (None: none)."""

    traceparent: str | None
    span: trace.Span | None = None

    def created(self, created: bool) -> None:
        if self.span is not None:
            self.span.set_attribute("mimoq.enqueue.created", created)


def producer_span(
    fields: Mapping[str, Any], *, destination: str
) -> contextlib.AbstractContextManager[Enqueue]:
    """The PRODUCER span of one enqueue; yields the ``traceparent`` the job must carry.

    Its parent is the job's own ``traceparent`` if it has one, else the current context
    (the HTTP caller's, or the producing application's own span). Off, the job keeps its
    own traceparent, or takes the current context's if the application traces.
    """
    own = fields.get("traceparent")
    if _tracer is None:
        return _Plain(Enqueue(own if isinstance(own, str) else current_traceparent()))
    parent = _context_of(own if isinstance(own, str) else None)
    if _left_out(parent):
        above = trace.get_current_span(parent).get_span_context()
        return _Parented(parent, Enqueue(_traceparent_of(above)))
    attributes: dict[str, Any] = {
        "messaging.system": MESSAGING_SYSTEM,
        # The older (<= 1.24) and the current names of the operation, for either backend.
        "messaging.operation.name": "publish",
        "messaging.operation.type": "send",
        "messaging.destination.name": destination,
    }
    job_id = fields.get("id")
    if job_id is not None:
        attributes["messaging.message.id"] = job_id
    attributes = _with_job(attributes, fields, fields.get("kind"))
    span = _start(f"send {destination}", SpanKind.PRODUCER, attributes, parent)
    return _Spanned(span, Enqueue(_traceparent_of(span.get_span_context()), span))


def _traceparent_of(context: SpanContext) -> str | None:
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


class _Attempt:
    """One attempt's block: the job's own traceparent remembered (for its callback, tracing
    off or on), around the attempt's span (or its left-out parent made current, or nothing)."""

    __slots__ = ("_inner", "_token", "_traceparent")

    def __init__(
        self, traceparent: str | None, inner: contextlib.AbstractContextManager[None]
    ) -> None:
        self._traceparent = traceparent
        self._inner = inner
        self._token: Token[str | None] | None = None

    def __enter__(self) -> None:
        self._token = _job_traceparent.set(self._traceparent)
        self._inner.__enter__()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            self._inner.__exit__(exc_type, exc, tb)
        finally:
            if self._token is not None:
                _job_traceparent.reset(self._token)


def attempt_span(
    job_id: str, raw: Any, kind: str | None, *, destination: str, arq_try: int
) -> contextlib.AbstractContextManager[None]:
    """The CONSUMER span of one attempt at a job, a child of the producer's context.

    ``raw`` is the job as dequeued (possibly malformed): only a valid ``traceparent`` is
    read from it. Off, only that traceparent is remembered, for the job's callback.
    """
    fields = raw if isinstance(raw, dict) else {}
    own = fields.get("traceparent")
    own = own if valid_traceparent(own) else None
    if _tracer is None:
        return _Attempt(own, _NOTHING)
    parent = _parsed(own) if own is not None else None
    if _left_out(parent):
        return _Attempt(own, _Parented(parent, None))
    attributes = _with_job(
        {
            "messaging.system": MESSAGING_SYSTEM,
            "messaging.operation.name": "process",
            "messaging.operation.type": "process",
            "messaging.destination.name": destination,
            "messaging.message.id": job_id,
            "mimoq.arq.try": arq_try,
        },
        fields,
        kind or fields.get("kind"),
    )
    span = _start(f"process {destination}", SpanKind.CONSUMER, attributes, parent)
    return _Attempt(own, _Spanned(span, None))


def note_try(tries: int) -> None:
    """The job's try number (deferrals not counted), once the worker knows it."""
    _job_try.set(tries)
    if _tracer is not None:
        trace.get_current_span().set_attribute("mimoq.job.try", tries)


def note_outcome(outcome: str, *, error_type: str | None = None, **extra: Any) -> None:
    """What the current attempt came to (``succeeded``, ``failed``, ``retrying``, ``deferred``)."""
    if _tracer is None:
        return
    span = trace.get_current_span()
    span.set_attribute("mimoq.job.outcome", outcome)
    for name, value in extra.items():
        if value is not None:
            span.set_attribute(f"mimoq.{name}", value)
    if error_type is not None:
        _fail(span, error_type)


class HttpCall:
    """The CLIENT span of an outgoing HTTP request; ``answered`` records its status."""

    __slots__ = ("span",)

    def __init__(self, span: trace.Span | None = None) -> None:
        self.span = span

    def answered(self, status_code: int) -> None:
        if self.span is None:
            return
        self.span.set_attribute("http.response.status_code", status_code)
        if status_code >= 400:
            _fail(self.span, str(status_code))

    def failed(self, error_type: str) -> None:
        """No answer (refused, DNS, connection, timeout): the error's kind, never its text."""
        if self.span is not None:
            _fail(self.span, error_type)


_NO_HTTP: Final = HttpCall()
_NO_CALL: Final = _Plain(_NO_HTTP)


@functools.lru_cache(maxsize=16)  # a worker calls one MiMo URL: its attributes, built once
def _mimo_attributes(url: str) -> Mapping[str, Any]:
    return MappingProxyType(
        {"http.request.method": "POST", "url.full": safe_url(url), **dict(_server_of(url))}
    )


def mimo_call_span(url: str) -> contextlib.AbstractContextManager[HttpCall]:
    """The CLIENT span of one MiMo request (``POST``), with the job's try as resend count."""
    if _tracer is None or _left_out():
        return _NO_CALL
    tries = _job_try.get()
    attributes = _mimo_attributes(url)
    if tries > 1:
        attributes = {**attributes, "http.request.resend_count": tries - 1}
    span = _start("POST", SpanKind.CLIENT, attributes)
    return _Spanned(span, HttpCall(span))


class _Store(Protocol):
    def is_local(self) -> bool: ...
    def url(self, key: str) -> str: ...


def storage_span(
    operation: str, key: str, *, storage: _Store
) -> contextlib.AbstractContextManager[None]:
    """An INTERNAL span ``storage <operation>`` around a storage write (``key`` is the
    output key, not a secret; the operation is in the span's name)."""
    if _tracer is None or _left_out():
        return _NOTHING
    # ``local``, or the object store's scheme (s3, gs, az, memory): never its credentials.
    backend = "local" if storage.is_local() else storage.url(key).split(":", 1)[0]
    attributes = {"mimoq.storage.key": key, "mimoq.storage.backend": backend}
    return _Spanned(_start(f"storage {operation}", SpanKind.INTERNAL, attributes), None)


def callback_span(
    traceparent: str | None, *, url: str, delivery_id: str, job_id: str, attempt: int
) -> contextlib.AbstractContextManager[HttpCall]:
    """The CLIENT span of one callback POST, a child of the attempt that scheduled it.

    ``url`` must already be redacted (scheme, host and port): a callback's path and query
    may hold the receiver's token.
    """
    if _tracer is None:
        return _NO_CALL
    parent = _context_of(traceparent)
    if _left_out(parent):
        return _Parented(parent, _NO_HTTP)
    attributes = {
        "http.request.method": "POST",
        "url.full": url,
        "mimoq.callback.delivery_id": delivery_id,
        "mimoq.job.id": job_id,
        **dict(_server_of(url)),
    }
    if attempt > 1:
        attributes["http.request.resend_count"] = attempt - 1
    span = _start("POST callback", SpanKind.CLIENT, attributes, parent)
    return _Spanned(span, HttpCall(span))
