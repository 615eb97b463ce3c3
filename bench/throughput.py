"""Jobs/s of the whole mimoq pipeline vs bare arq no-op jobs, side by side in one run.

    python bench/throughput.py [--jobs 2000] [--concurrency 100] [--poll-delay 0.2]
                               [--audio-kb 16] [--rounds 1] [--no-callbacks] [--tracing]
                               [--control]

One private redis-server (no persistence), the simulator at zero latency answering every
TTS request with ``--audio-kb`` KiB of audio, and a callback receiver, each in its own
process. Each phase flushes Redis, enqueues N jobs from this process (timed: enqueue/s),
then starts a fresh worker process that drains them:

- ``bare``: no-op jobs enqueued with arq's own ``enqueue_job``, run by a plain arq ``Worker``
  (the same ``max_jobs``, ``poll_delay`` and JSON serializer; arq's other defaults);
- ``mimoq``: speech jobs through ``Producer.enqueue`` (validation + the atomic enqueue
  script), run by ``build_worker`` with the limiter off (the quota would be the bound):
  a MiMo call each, the WAV streamed to a file, the result record written;
- ``mimoq+cb``: the same, each job with a signed callback to the receiver, delivered by
  the job's own run (``MIMOQ_CALLBACK_INLINE``; with it off, each delivery is a second arq
  job, and the worker completes 2N jobs);
- with ``--tracing``, ``mimoq+otel`` (and ``mimoq+cb+otel``): the same with OpenTelemetry
  tracing on in the producer and the worker (``OTEL_EXPORTER_OTLP_ENDPOINT`` pointed at an
  OTLP/HTTP sink in its own process, the SDK's default batching and sampler), next to the
  same phase with tracing off (odd rounds run the traced phase first); the sink counts the
  spans it was sent. It also times the hooks a job passes through with tracing off (the
  cost of having them at all) and, tracing on, the worker's hooks of one job, their
  encoding, and the SDK's own floor for the same spans without attributes. With
  ``--control`` the ``+otel`` phases run with tracing off too: their "tracing on / off"
  ratios are then what the bench reports between two identical phases (its own bias).

The window is timed inside the worker: from the start of arq's first ``run_job`` (fetching
the first job) to the end of the ``run_job`` that completes the last expected job (result
written, arq's bookkeeping done). Worker CPU is ``getrusage`` over the same window (all its
threads), loop CPU the event loop thread's own (``thread_time``; the rest is other threads:
the span exporter's, storage writes handed to threads), and the cyclic garbage collector's
share of both is timed too (start-up's garbage is collected before the window); the CPU of
redis-server and the simulator over the phase comes from /proc. CPU per job does not depend
on how many cores the machine's other work leaves free, jobs/s does: compare both.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _support import (
    Service,
    Services,
    callbacks_received,
    cpu_s,
    run_child,
    sigterm_as_interrupt,
    spans_received,
)
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.worker import Worker, func

from mimoq.core import wire
from mimoq.core.settings import Settings, WorkerSettings

PHASES = ("bare", "mimoq", "mimoq+otel", "mimoq+cb", "mimoq+cb+otel")
BARE_TASK = "noop"
TEXT = "Hello from the throughput bench."
CHILD_TIMEOUT_S = 300.0
LOOPBACK = "127.0.0.0/8"  # callbacks go to a loopback receiver, which the SSRF guard refuses


async def noop(ctx: dict[str, Any]) -> None:
    """The bare arq job: nothing at all."""


def mimoq_settings(
    redis_url: str, sim_url: str, data_dir: Path, args: argparse.Namespace
) -> Settings:
    """The worker's and producer's settings (the webhook secret comes from the environment)."""
    return Settings(
        mimo={"base_url": sim_url + "/v1"},
        redis_url=redis_url,
        storage={"data_dir": data_dir},
        limiter={"enabled": False},
        worker={
            "concurrency": args.concurrency,
            "poll_delay_s": args.poll_delay,
            "shutdown_grace_s": 10.0,
        },
        callbacks={"allow_networks": LOOPBACK},
    )


# --- the worker child ---------------------------------------------------------------------


@dataclass
class Window:
    """Time and CPU from the first ``run_job`` start to the completion of the last job."""

    expected: int
    done: asyncio.Event
    first_t: float | None = None
    first_cpu: float = 0.0
    first_loop_cpu: float = 0.0
    first_gc: float = 0.0
    last_t: float = 0.0
    last_cpu: float = 0.0
    last_loop_cpu: float = 0.0
    last_gc: float = 0.0


class GcClock:
    """CPU seconds the cyclic garbage collector has taken in this process (any thread).

    Objects that live a while (spans waiting in the exporter's queue) make it collect more
    often and look at more: a cost of tracing that timing its hooks alone does not show.
    """

    def __init__(self) -> None:
        self.total_s = 0.0
        self._started = 0.0
        gc.callbacks.append(self._note)

    def _note(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.thread_time()
        else:  # "stop", in the thread that started it
            self.total_s += time.thread_time() - self._started


GC_CLOCK = GcClock()


def instrument(worker: Worker, expected: int) -> Window:
    """Wrap the worker's ``run_job`` to time the window; ``done`` is set at the last job.

    ``run_job`` is arq's per-job coroutine (fetch, run, record); wrapping the instance's
    bound method measures both kinds of worker the same way without touching their code.
    """
    window = Window(expected, asyncio.Event())
    original = worker.run_job

    async def timed(job_id: str, score: int) -> None:
        if window.first_t is None:
            window.first_t, window.first_cpu = time.perf_counter(), cpu_s()
            window.first_loop_cpu = time.thread_time()  # this runs in the loop's thread
            window.first_gc = GC_CLOCK.total_s
        await original(job_id, score)
        if not window.done.is_set() and worker.jobs_complete + worker.jobs_failed >= expected:
            window.last_t, window.last_cpu = time.perf_counter(), cpu_s()
            window.last_loop_cpu = time.thread_time()
            window.last_gc = GC_CLOCK.total_s
            window.done.set()

    setattr(worker, "run_job", timed)  # noqa: B010 (mypy refuses assigning to a method)
    return window


def bare_worker(args: argparse.Namespace, *, burst: bool = False) -> Worker:
    """A plain arq ``Worker`` of no-op jobs with mimoq's ``max_jobs``, poll delay and JSON
    serializer (arq's other defaults); ``burst``: it stops once the queue is empty."""
    return Worker(
        functions=[func(noop, name=BARE_TASK)],
        redis_settings=RedisSettings.from_dsn(args.redis),
        max_jobs=args.concurrency,
        poll_delay=args.poll_delay,
        job_serializer=wire.serialize,
        job_deserializer=json.loads,
        handle_signals=False,
        burst=burst,
    )


def is_traced(phase: str, args: argparse.Namespace) -> bool:
    """Whether ``phase`` runs with tracing on (``--control``: none does)."""
    return phase.endswith("+otel") and not args.control


def build(phase: str, args: argparse.Namespace) -> Worker:
    if phase == "bare":
        return bare_worker(args)
    from mimoq.core.logs import configure
    from mimoq.worker.arq_worker import build_worker

    configure(level="WARNING")  # no per-job log lines: arq's own INFO lines are off too
    if is_traced(phase, args):  # the OTEL_* variables are in this child's environment
        from mimoq.core import tracing

        assert tracing.setup_from_env("mimoq-bench-worker", relay=True)  # as `mimoq worker`
    return build_worker(mimoq_settings(args.redis, args.sim, args.out, args), handle_signals=False)


async def worker_child(phase: str, args: argparse.Namespace) -> dict[str, Any]:
    from mimoq.worker.arq_worker import drain_and_close

    worker = build(phase, args)
    # Start-up's garbage (tracing on, the SDK's and the exporter's imports too) is collected
    # before the window, as a long-running worker has long since done: the window measures
    # the collector's work per job, not one start-up collection that lands in it by chance.
    gc.collect()
    # a callback's delivery is an arq job of its own only when its job's run does not make it
    delivery_jobs = "+cb" in phase and not worker.ctx["settings"].callbacks.inline_first
    expected = args.jobs * (2 if delivery_jobs else 1)
    window = instrument(worker, expected)
    running = asyncio.create_task(worker.async_run())
    finished = asyncio.create_task(window.done.wait())
    try:
        await asyncio.wait(
            {running, finished}, timeout=CHILD_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        if running.done():
            running.result()  # a worker that died says why
        if not window.done.is_set() or window.first_t is None:
            raise TimeoutError(f"{worker.jobs_complete} of {expected} jobs after the deadline")
    finally:
        finished.cancel()
        await drain_and_close(worker, grace_s=10.0)
        from mimoq.core import tracing

        tracing.shutdown()  # exports what is left (after the window)
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    return {
        "window_s": window.last_t - window.first_t,
        "cpu_s": window.last_cpu - window.first_cpu,
        "loop_cpu_s": window.last_loop_cpu - window.first_loop_cpu,
        "gc_s": window.last_gc - window.first_gc,
        "complete": worker.jobs_complete,
        "failed": worker.jobs_failed,
        "retried": worker.jobs_retried,
    }


# --- the parent: enqueue, run a worker, check ---------------------------------------------


async def enqueue(
    phase: str, args: argparse.Namespace, settings: Settings, hook: str, otel_env: dict[str, str]
) -> float:
    """Enqueue ``args.jobs`` jobs for ``phase`` one after another; returns the seconds taken."""
    if phase == "bare":
        pool = await create_pool(
            RedisSettings.from_dsn(args.redis),
            job_serializer=wire.serialize,
            job_deserializer=json.loads,
        )
        try:
            await pool.flushall()
            started = time.perf_counter()
            for i in range(args.jobs):
                await pool.enqueue_job(BARE_TASK, _job_id=f"bare-{i}")
            return time.perf_counter() - started
        finally:
            await pool.aclose()

    from mimoq.core import tracing
    from mimoq.producer.client import Producer

    if is_traced(phase, args):
        os.environ.update(otel_env)  # the exporter reads its endpoint from the environment
        assert tracing.setup_from_env("mimoq-bench-producer")
    redis = ArqRedis.from_url(args.redis)
    try:
        await redis.flushall()
        producer = Producer(redis, settings)
        job: dict[str, Any] = {"kind": "speech", "input": TEXT}
        if "+cb" in phase:
            job["callback"] = {"url": hook}
        started = time.perf_counter()
        for i in range(args.jobs):
            await producer.enqueue({**job, "id": f"job-{i}"})
        return time.perf_counter() - started
    finally:
        await redis.aclose()
        tracing.shutdown()
        for name in otel_env:
            del os.environ[name]


async def check(phase: str, args: argparse.Namespace, data_dir: Path) -> list[str]:
    """What is wrong with the phase's outcome, read from Redis and the disk (empty: nothing)."""
    redis = ArqRedis.from_url(args.redis)
    try:
        if phase == "bare":
            results = [k async for k in redis.scan_iter(match=wire.ARQ_RESULT_PREFIX + "*")]
            ok = len(results) == args.jobs
            return [] if ok else [f"{len(results)} arq results for {args.jobs} jobs"]
        keys = [k async for k in redis.scan_iter(match=wire.RESULT_PREFIX + "*", count=1000)]
        records = [json.loads(r) for r in await redis.mget(keys)] if keys else []
    finally:
        await redis.aclose()
    problems = []
    succeeded = sum(r["status"] == "succeeded" for r in records)
    if succeeded != args.jobs:
        problems.append(f"{succeeded} succeeded results for {args.jobs} jobs")
    files = sum(1 for _ in data_dir.rglob("*.wav"))
    if files != args.jobs:
        problems.append(f"{files} WAV files for {args.jobs} jobs")
    if "+cb" in phase:
        delivered = sum(r["callback"]["status"] == "delivered" for r in records)
        if delivered != args.jobs:
            problems.append(f"{delivered} callbacks delivered for {args.jobs} jobs")
    return problems


@dataclass
class PhaseResult:
    phase: str
    enqueue_s: float
    window_s: float
    worker_cpu_s: float
    redis_cpu_s: float | None
    sim_cpu_s: float | None
    problems: list[str]
    spans: int | None = None
    loop_cpu_s: float = 0.0
    gc_s: float = 0.0


def _delta(service: Service, before: float | None) -> float | None:
    after = service.cpu_s()
    return None if after is None or before is None else after - before


def run_phase(
    phase: str,
    args: argparse.Namespace,
    workdir: Path,
    redis: Service,
    sim: Service,
    receiver: Service | None,
    env: dict[str, str],
    sink: Service | None,
) -> PhaseResult:
    data_dir = workdir / f"data-{phase}-{time.monotonic_ns()}"
    data_dir.mkdir()
    settings = mimoq_settings(args.redis, args.sim, data_dir, args)
    hook = receiver.url + "/hook" if receiver else ""
    received_before = callbacks_received(receiver) if receiver else 0
    otel_env = otel_environment(sink, args.sample) if sink and is_traced(phase, args) else {}
    spans_before = spans_received(sink) if sink else 0
    enqueue_s = asyncio.run(enqueue(phase, args, settings, hook, otel_env))
    redis_cpu, sim_cpu = redis.cpu_s(), sim.cpu_s()
    argv = [
        sys.executable,
        __file__,
        "--child",
        phase,
        "--redis",
        args.redis,
        "--sim",
        args.sim,
        "--out",
        str(data_dir),
        "--jobs",
        str(args.jobs),
        "--concurrency",
        str(args.concurrency),
        "--poll-delay",
        str(args.poll_delay),
        *(["--control"] if args.control else []),
    ]
    report = run_child(argv, timeout_s=CHILD_TIMEOUT_S + 30, env={**env, **otel_env})
    redis_delta, sim_delta = _delta(redis, redis_cpu), _delta(sim, sim_cpu)
    problems = asyncio.run(check(phase, args, data_dir))
    if report["failed"] or report["retried"]:
        problems.append(f"arq: {report['failed']} failed, {report['retried']} retried")
    if receiver and "+cb" in phase:
        received = callbacks_received(receiver) - received_before
        if received != args.jobs:
            problems.append(f"the receiver got {received} callbacks for {args.jobs} jobs")
    spans = spans_received(sink) - spans_before if sink and otel_env else None
    if spans is not None:
        # send + process + storage write + MiMo POST per job; + the callback POST with one.
        wanted = args.jobs * (5 if "+cb" in phase else 4)
        if spans < wanted and args.sample is None:
            problems.append(f"the OTLP sink got {spans} spans, {wanted} expected (dropped)")
    return PhaseResult(
        phase,
        enqueue_s,
        report["window_s"],
        report["cpu_s"],
        redis_delta,
        sim_delta if phase != "bare" else None,
        problems,
        spans,
        report["loop_cpu_s"],
        report["gc_s"],
    )


def otel_environment(sink: Service, sample: float | None) -> dict[str, str]:
    """Tracing on, as an operator would turn it on: the endpoint and a service name (and,
    with ``--sample``, the ratio of traces kept, decided at the producer)."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_SERVICE_NAME": "mimoq-bench"}
    if sample is not None:
        env |= {
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": str(sample),
        }
    return env


class LocalStore:
    """A storage whose span names the local backend (what the bench's worker writes to)."""

    def is_local(self) -> bool:
        return True

    def url(self, key: str) -> str:
        return "file:///" + key


def worker_hooks(fields: dict[str, Any], store: LocalStore) -> None:
    """The tracing hooks a worker runs for one speech job, in its order (runner, pipeline,
    mimo_client): the attempt, its storage write and, inside it, the MiMo call."""
    from mimoq.core import tracing

    with tracing.attempt_span("job-1", fields, "speech", destination=wire.QUEUE_NAME, arq_try=1):
        tracing.note_try(1)
        with (
            tracing.storage_span("write", "speech/job-1.wav", storage=store),
            tracing.mimo_call_span("http://127.0.0.1/v1/chat/completions") as call,
        ):
            call.answered(200)
        tracing.note_outcome("succeeded")


def hooks_off_us(rounds: int = 20_000) -> float:
    """Microseconds per job spent in the tracing hooks a job with a callback passes through,
    tracing off: what having them costs when nobody traces."""
    from mimoq.core import tracing

    assert not tracing.is_on()
    fields = {"id": "job-1", "kind": "speech", "model": "mimo-v2.5-tts"}
    headers: dict[str, str] = {}
    store = LocalStore()
    started = time.perf_counter()
    for _ in range(rounds):
        with tracing.producer_span(fields, destination=wire.QUEUE_NAME) as span:
            span.created(True)
        worker_hooks(fields, store)
        tracing.current_traceparent()
        with tracing.callback_span(None, url="u", delivery_id="d", job_id="j", attempt=1) as cb:
            tracing.add_traceparent(headers, None)
            cb.answered(200)
    return (time.perf_counter() - started) / rounds * 1e6


@dataclass
class HooksOn:
    """Tracing on, CPU microseconds per job of the tracing work for one speech job."""

    spans: int  # per job
    # the worker (the relay): its hooks record the spans; its relay thread marshals them
    relay_record_us: float
    relay_handoff_us: float
    # the sidecar: the SDK makes each relayed record a span, and encodes it as OTLP
    sidecar_us: float
    # in one process, as producers and `mimoq serve` trace: the SDK's tracer, its encoding
    record_us: float
    encode_us: float
    left_out_us: float  # the worker's hooks of a job whose trace the sampler left out
    sdk_record_us: float  # the SDK's floor: as many spans, nested alike, no attributes
    sdk_encode_us: float  # and their encoding


def sdk_spans(tracer: Any, parent: Any) -> None:
    """The SDK's own floor for the worker's spans: the same three, nested as the hooks nest
    them, made with the tracer's own calls and with no attributes (nothing of mimoq's)."""
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    attempt = tracer.start_span("process", context=parent, kind=SpanKind.CONSUMER)
    write = tracer.start_span("storage write", context=trace.set_span_in_context(attempt))
    call = tracer.start_span("POST", context=trace.set_span_in_context(write), kind=SpanKind.CLIENT)
    call.end()
    write.end()
    attempt.end()


def _timed(rounds: int, work: Any, *args: Any) -> float:
    """CPU seconds of this thread for ``rounds`` calls of ``work``, from a collected heap."""
    gc.collect()
    started = time.thread_time()
    for _ in range(rounds):
        work(*args)
    return time.thread_time() - started


def hooks_on(rounds: int = 5_000) -> HooksOn:
    """The tracing cost per job without Redis, MiMo or the network, in CPU time of this
    thread (so other load barely moves it): the worker's hooks with the relay (a worker's
    way) and the hand-off of their records, the sidecar's making and encoding of them; the
    same hooks with the SDK's tracer in-process and the OTLP exporter's encoding."""
    import marshal

    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from mimoq.core import span_relay, span_sidecar, tracing

    resource = tracing.service_resource("mimoq-bench-worker")
    fields = {
        "id": "job-1",
        "kind": "speech",
        "model": "mimo-v2.5-tts",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    }
    store = LocalStore()

    def encoded(spans: Any) -> float:
        started = time.thread_time()
        for first in range(0, len(spans), 512):  # the batch processor's default batch
            encode_spans(spans[first : first + 512]).SerializePartialToString()
        return time.thread_time() - started

    # the worker: the relay's hooks, then its thread's marshalling, frame by frame
    relay = span_relay.SpanRelay()
    tracing.install_relay(relay, TracerProvider(shutdown_on_exit=False).sampler)
    try:
        for _ in range(rounds // 10):  # warm up: caches, first imports
            worker_hooks(fields, store)
        relay._queue.clear()
        relay_record_s = _timed(rounds, worker_hooks, fields, store)
        records = list(relay._queue)
        relay._queue.clear()
        started = time.thread_time()
        frames = [
            marshal.dumps(records[i : i + span_relay.MAX_FRAME_RECORDS])
            for i in range(0, len(records), span_relay.MAX_FRAME_RECORDS)
        ]
        handoff_s = time.thread_time() - started
        # the producer's sampler said no (flags 00): the default sampler is parent-based
        left_out = {**fields, "traceparent": fields["traceparent"][:-2] + "00"}
        left_out_s = _timed(rounds, worker_hooks, left_out, store)
    finally:
        tracing.shutdown()
    # the sidecar: the records made the SDK's spans, handed to a span processor, encoded
    exporter = InMemorySpanExporter()
    processors = [SimpleSpanProcessor(exporter)]
    gc.collect()
    started = time.thread_time()
    for frame in frames:
        span_sidecar.export_records(marshal.loads(frame), processors, resource)
    sidecar_s = time.thread_time() - started + encoded(exporter.get_finished_spans())
    del records, frames
    exporter.clear()
    # in one process: the SDK's tracer behind the same hooks, then the SDK's floor
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        record_s = _timed(rounds, worker_hooks, fields, store)
        spans = exporter.get_finished_spans()
        encode_s = encoded(spans)
        count = len(spans)
        del spans  # each measurement starts from the same heap: the collector's work grows
        exporter.clear()  # with the objects alive
        tracer = provider.get_tracer(tracing.INSTRUMENTATION)
        parent = TraceContextTextMapPropagator().extract({"traceparent": fields["traceparent"]})
        sdk_record_s = _timed(rounds, sdk_spans, tracer, parent)
        sdk_encode_s = encoded(exporter.get_finished_spans())
        exporter.clear()
    finally:
        tracing.shutdown()
    per_job = [
        x / rounds * 1e6
        for x in (
            relay_record_s, handoff_s, sidecar_s, record_s, encode_s, left_out_s,
            sdk_record_s, sdk_encode_s,
        )
    ]  # fmt: skip
    return HooksOn(count // rounds, *per_job)


def _ms(value: float | None, jobs: int) -> str:
    return "-" if value is None else f"{value * 1000 / jobs:.2f}"


def report(rounds: list[dict[str, PhaseResult]], args: argparse.Namespace) -> bool:
    n = args.jobs
    print(
        f"{n} jobs per phase, max_jobs={args.concurrency}, poll_delay={args.poll_delay:g} s, "
        f"JSON serializer; redis-server without persistence; simulator at zero latency "
        f"answering {args.audio_kb:g} KiB of audio; every service in its own process"
    )
    print(
        f"{'round':<6}{'phase':<14}{'enqueue/s':>10}{'jobs/s':>9}{'window s':>10}"
        f"{'worker CPU':>12}{'loop CPU':>10}{'redis CPU':>11}{'sim CPU':>9}   (CPU: ms per job)"
    )
    ok = True
    for number, results in enumerate(rounds, 1):
        for r in results.values():
            print(
                f"{number:<6}{r.phase:<14}{n / r.enqueue_s:>10.0f}{n / r.window_s:>9.0f}"
                f"{r.window_s:>10.3f}{_ms(r.worker_cpu_s, n):>12}{_ms(r.loop_cpu_s, n):>10}"
                f"{_ms(r.redis_cpu_s, n):>11}{_ms(r.sim_cpu_s, n):>9}"
            )
            if r.spans is not None:
                print(f"      {r.phase}: the OTLP sink received {r.spans} spans")
            for problem in r.problems:
                ok = False
                print(f"      PROBLEM in {r.phase}: {problem}")
        bare = results["bare"]
        ratios = ", ".join(
            f"{phase} / bare = {bare.window_s / results[phase].window_s:.3f}"
            for phase in results
            if phase != "bare"
        )
        cpu = ", ".join(
            f"{phase} / bare = {results[phase].worker_cpu_s / bare.worker_cpu_s:.1f}x"
            for phase in results
            if phase != "bare"
        )
        print(f"round {number}: jobs/s {ratios}; worker CPU per job {cpu}")
        for traced in [p for p in results if p.endswith("+otel")]:
            off = results[traced.removesuffix("+otel")]
            on = results[traced]
            # Where the extra CPU goes: the loop thread records spans, the others export them.
            loop_ms = (on.loop_cpu_s - off.loop_cpu_s) * 1000 / n
            other_ms = (
                ((on.worker_cpu_s - on.loop_cpu_s) - (off.worker_cpu_s - off.loop_cpu_s)) * 1000 / n
            )
            gc_ms = (on.gc_s - off.gc_s) * 1000 / n
            print(
                f"round {number}: tracing on / off, {off.phase}: jobs/s "
                f"{off.window_s / on.window_s:.3f}, enqueue/s {off.enqueue_s / on.enqueue_s:.3f}, "
                f"worker CPU per job {on.worker_cpu_s / off.worker_cpu_s:.3f}x "
                f"({loop_ms:+.2f} ms loop thread, {other_ms:+.2f} ms other threads; "
                f"of both, {gc_ms:+.2f} ms garbage collection)"
            )
    if len(rounds) > 1:
        medians = ", ".join(
            f"{phase} / bare = "
            f"{statistics.median(r['bare'].window_s / r[phase].window_s for r in rounds):.3f}"
            for phase in rounds[0]
            if phase != "bare"
        )
        print(f"median over {len(rounds)} rounds: jobs/s {medians}")
        for traced in [p for p in rounds[0] if p.endswith("+otel")]:
            off = traced.removesuffix("+otel")
            ratio = statistics.median(r[off].window_s / r[traced].window_s for r in rounds)
            cpu = statistics.median(r[traced].worker_cpu_s / r[off].worker_cpu_s for r in rounds)
            print(
                f"median over {len(rounds)} rounds: tracing on / off, {off}: jobs/s {ratio:.3f}, "
                f"worker CPU per job {cpu:.3f}x"
            )
    if args.tracing:
        hooks = hooks_off_us()
        mimoq_rate = statistics.median(args.jobs / r["mimoq"].window_s for r in rounds)
        print(
            f"tracing off: the hooks of one job (with a callback) take {hooks:.1f} us, "
            f"{hooks * mimoq_rate / 1e4:.2f} % of a job's worker time at {mimoq_rate:.0f} jobs/s"
        )
        on = hooks_on()
        off_cpu_ms = statistics.median(r["mimoq"].worker_cpu_s * 1000 / n for r in rounds)
        worker_us = on.relay_record_us + on.relay_handoff_us
        print(
            f"tracing on, in the worker: its hooks record one job's {on.spans} spans in "
            f"{on.relay_record_us:.1f} us CPU and the relay thread hands them off in "
            f"{on.relay_handoff_us:.1f} us: {worker_us / 10 / off_cpu_ms:.2f} % of the "
            f"{off_cpu_ms:.2f} ms of worker CPU a job takes with tracing off; a job the "
            f"sampler left out: {on.left_out_us:.1f} us"
        )
        print(
            f"tracing on, in the sidecar process: the SDK makes and encodes them in "
            f"{on.sidecar_us:.0f} us per job"
        )
        total_us = on.record_us + on.encode_us
        floor_us = on.sdk_record_us + on.sdk_encode_us
        print(
            f"the same in one process (the SDK's tracer, as producers and `mimoq serve` "
            f"trace): {on.record_us:.0f} us + {on.encode_us:.0f} us encoding, "
            f"{total_us / 10 / off_cpu_ms:.1f} % of a job; the SDK's floor, the same "
            f"{on.spans} spans with no attributes: {on.sdk_record_us:.0f} us + "
            f"{on.sdk_encode_us:.0f} us ({floor_us / 10 / off_cpu_ms:.1f} %)"
        )
    return ok


def run_order(phases: list[str], number: int) -> list[str]:
    """``phases`` in the order round ``number`` (from 0) runs them: odd rounds run each
    traced phase just before its untraced twin, so that the machine's load drifting over a
    run favours neither side of the tracing comparison."""
    if number % 2 == 0:
        return phases
    order: list[str] = []
    for phase in (p for p in phases if not p.endswith("+otel")):
        order += [phase + "+otel", phase] if phase + "+otel" in phases else [phase]
    return order


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per phase")
    parser.add_argument("--concurrency", type=int, default=100, help="max_jobs of each worker")
    parser.add_argument(
        "--poll-delay",
        type=float,
        default=WorkerSettings.model_fields["poll_delay_s"].default,
        help="arq poll_delay of each worker, s (mimoq's default)",
    )
    parser.add_argument("--audio-kb", type=float, default=16.0, help="KiB of audio per answer")
    parser.add_argument("--rounds", type=int, default=1, help="repeat all phases this often")
    parser.add_argument("--no-callbacks", action="store_true", help="skip the mimoq+cb phase")
    parser.add_argument(
        "--tracing", action="store_true", help="also run the mimoq phases with tracing on"
    )
    parser.add_argument(
        "--sample", type=float, metavar="RATIO",
        help="with --tracing: keep this share of traces (parentbased_traceidratio)",
    )  # fmt: skip
    parser.add_argument(
        "--control", action="store_true",
        help="with --tracing: run the +otel phases with tracing off too (an A/A run: what the "
        "bench reports between two identical phases)",
    )  # fmt: skip
    parser.add_argument("--child", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    parser.add_argument("--sim", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(worker_child(args.child, args))))
        return 0

    sigterm_as_interrupt()
    phases = [
        p
        for p in PHASES
        if not (args.no_callbacks and "+cb" in p) and (args.tracing or not p.endswith("+otel"))
    ]
    # Signed callbacks, as in production; the secret reaches the worker through its
    # environment (an argument would be visible to every user of the machine).
    env = {"MIMOQ_WEBHOOK_SECRET": "whsec_" + base64.b64encode(os.urandom(24)).decode()}
    audio = int(args.audio_kb * 1024) // 2 * 2  # whole 16-bit samples
    rounds: list[dict[str, PhaseResult]] = []
    with tempfile.TemporaryDirectory(prefix="mimoq-bench-") as tmp, Services(Path(tmp)) as svc:
        redis = svc.redis()
        sim = svc.simulator("--audio-bytes", str(audio))
        receiver = svc.receiver() if "mimoq+cb" in phases else None
        sink = svc.otlp_sink() if args.tracing else None
        args.redis, args.sim = redis.url, sim.url
        for number in range(args.rounds):
            rounds.append(
                {
                    p: run_phase(p, args, Path(tmp), redis, sim, receiver, env, sink)
                    for p in run_order(phases, number)
                }
            )
    return 0 if report(rounds, args) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: every process this bench started is stopped", file=sys.stderr)
        sys.exit(130)
