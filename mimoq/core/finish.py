"""The one finish path: every terminal result record (succeeded, failed, cancelled) is written here.

The worker's runner, arq's own failures (worker/arq_worker.py) and a cancel (producer/cancel.py)
all end a job through :func:`finish`, so whatever must happen once per finished job (the
record, the callback, the recent-failures list; per-run and per-tenant counters hook here)
happens the same way whoever ended it. It lives in core because producers end jobs too.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import structlog
from redis.asyncio import Redis

from mimoq.core import deliveries, failures, run_events, runs, tracing, wire
from mimoq.core.jobs import Callback, CallbackPayload, CallbackState, CallbackStatus, JobResult
from mimoq.core.results import (
    forget_tenant_job,
    sanitize,
    write_result_safely,
    write_result_unless_cancelled,
)
from mimoq.core.settings import Settings
from mimoq.core.usage_windows import UsageWrite
from mimoq.core.webhooks import Delivery

log = structlog.get_logger("mimoq.worker")
#: Cancelled jobs recorded per pipeline by ``finish_cancelled``.
_PAGE = 500
#: What an inline callback attempt may spend on its records past its HTTP bound.
INLINE_WRITES_S: Final = 10.0
#: An inline attempt's backstop job is due this long after the attempt's bound.
INLINE_SLACK_S: Final = 20.0


@dataclass(frozen=True)
class Finished:
    """A finished job's record as written, and the callback delivery its finisher attempts
    itself (``inline``; None when there is none to attempt)."""

    result: JobResult
    delivery: Delivery | None = None
    #: The record's text as written (its delivery's attempt updates it without reading it).
    record: str | None = None


async def enqueue_delivery(redis: Redis, delivery: Delivery, *, defer_s: float = 0.0) -> bool:
    """Store the delivery and enqueue its job (id = delivery id); False if one is pending."""
    return await deliveries.enqueue(redis, delivery, defer_s=defer_s)


def callback_body(result: JobResult, delivery_id: str) -> str:
    """The exact JSON text a callback sends for ``result``: the same bytes again from the
    same record, so an ended delivery (which drops its body) can show what it sent."""
    return wire.dumps(CallbackPayload.from_result(result, delivery_id).model_dump(mode="json"))


def build_delivery(result: JobResult, callback: Callback) -> Delivery:
    """The delivery of a finished job's callback, its body built from ``result`` (the
    record just written): every attempt and replay sends the same bytes under the same
    ``webhook-id``."""
    delivery_id = wire.callback_job_id(result.id)
    return Delivery(
        delivery_id=delivery_id,
        job_id=result.id,
        url=callback.url,
        headers=dict(callback.headers),
        body=callback_body(result, delivery_id),
        created_at=time.time(),
        # The finishing attempt's span (or, tracing off, the job's own traceparent).
        traceparent=tracing.current_traceparent(),
    )


async def schedule_callback(
    redis: Redis, result: JobResult, callback: Callback, *, settings: Settings | None = None
) -> str:
    """Hand a finished job's callback to its own delivery job; returns the delivery id.

    The body is serialized here, once, into the worker-only delivery record. Idempotent:
    if the delivery job already exists, nothing is added. With ``settings``, the first
    attempt waits for the schedule's first entry; without, it is immediate.
    """
    delivery = build_delivery(result, callback)
    defer_s = settings.callbacks.schedule_s[0] if settings is not None else 0.0
    await enqueue_delivery(redis, delivery, defer_s=defer_s)
    return delivery.delivery_id


async def _hand_over_callback(
    redis: Redis, result: JobResult, callback: Callback, *, settings: Settings, inline: bool
) -> Delivery | None:
    """``schedule_callback``, or, with ``inline`` (the caller makes the first attempt itself,
    docs/payloads.md "Who makes the first attempt"), the delivery job queued as the
    attempt's backstop only:
    due once the attempt could no longer be running, so a worker that dies during it loses
    nothing. Returns the delivery the caller attempts (None: not inline, or a delivery job
    with this id was already pending, which then makes the attempt)."""
    delivery = build_delivery(result, callback)
    queued = await enqueue_delivery(redis, delivery, defer_s=_hand_over_defer_s(settings, inline))
    return delivery if queued and inline else None


def _hand_over_defer_s(settings: Settings, inline: bool) -> float:
    """When a handed-over callback's delivery job is due: the schedule's first entry, or,
    behind an inline attempt, once that attempt could no longer be running."""
    if inline:
        return inline_backstop_s(settings.callbacks.timeout_s)
    return settings.callbacks.schedule_s[0]


def inline_bound_s(timeout_s: float) -> float:
    """The longest an inline attempt may take (``timeout_s`` to the verdict, as long again
    to drain the answer, then its records): past it, it is given up."""
    return 2 * timeout_s + INLINE_WRITES_S


def inline_backstop_s(timeout_s: float) -> float:
    """How long after its job finished an inline attempt's backstop job is due: once the
    attempt can no longer be running."""
    return inline_bound_s(timeout_s) + INLINE_SLACK_S


async def finish(
    redis: Redis,
    result: JobResult,
    callback: Callback | None,
    *,
    settings: Settings,
    usage: UsageWrite | None = None,
) -> JobResult:
    """Record the result (a failure if it cannot be encoded: nothing vanishes), then hand
    the callback, built from what was recorded, to its own delivery job. ``usage`` (what
    the job adds to its tenant's totals, docs/usage.md) and the job's count in its run are
    written on the same round trip as the record."""
    _note_callback(result, callback)
    run = _run_count(result)
    result = await write_result_safely(
        redis, result, ttl_s=settings.storage.result_ttl_s, usage=usage, run=run
    )
    await _after_write(redis, result, callback, settings=settings, run=run)
    return result


async def finish_unless_cancelled(
    redis: Redis,
    result: JobResult,
    callback: Callback | None,
    *,
    settings: Settings,
    usage: UsageWrite | None = None,
    inline_callback: bool = False,
    drop_keys: Sequence[str] = (),
) -> Finished | None:
    """:func:`finish` for the succeeded or failed result of a job a worker ran, unless its
    cancel came first (docs/cancel.md): then nothing is recorded and None comes back (the
    caller discards the output and records the job as cancelled through :func:`finish`).
    ``usage`` is written either way; the job's count in its run only with the record, by the
    same script. With ``inline_callback``, the caller makes the callback's first attempt
    itself (``Finished.delivery``; the delivery job is its backstop). ``drop_keys`` are
    deleted with the write, either way."""
    _note_callback(result, callback)
    run = _run_count(result)
    # A job of no run hands its callback over on the record's own round trip (one less a
    # callback, issue #22; the write makes no hand-over for a job of a run). A run's last
    # job hands it over only once the write has told it that it was the last
    # (``_after_write``).
    handed: list[deliveries.HandOver] = []

    def hand_over(written: JobResult) -> deliveries.HandOver:
        assert callback is not None
        delivery = build_delivery(written, callback)
        handed.append(
            deliveries.hand_over(delivery, defer_s=_hand_over_defer_s(settings, inline_callback))
        )
        return handed[-1]

    wrote = await write_result_unless_cancelled(
        redis,
        result,
        ttl_s=settings.storage.result_ttl_s,
        usage=usage,
        run=run,
        drop_keys=drop_keys,
        hand_over=hand_over if callback is not None else None,
    )
    if wrote is None:
        return None
    written, record = wrote
    if handed:
        await _after_write(redis, written, None, settings=settings, run=run)
        # (not queued: a delivery job with this id was pending, and makes the attempt)
        queued = handed[0].queued and inline_callback
        return Finished(written, handed[0].delivery if queued else None, record)
    delivery = await _after_write(
        redis, written, callback, settings=settings, run=run, inline=inline_callback
    )
    return Finished(written, delivery, record)


def _run_count(result: JobResult) -> runs.RunCount | None:
    return None if result.run is None else runs.RunCount(result.run, result.id)


def _note_callback(result: JobResult, callback: Callback | None) -> None:
    if callback is not None:
        result.callback = CallbackState(
            status=CallbackStatus.pending, delivery_id=wire.callback_job_id(result.id)
        )


async def _after_write(
    redis: Redis,
    result: JobResult,
    callback: Callback | None,
    *,
    settings: Settings,
    run: runs.RunCount | None,
    inline: bool = False,
) -> Delivery | None:
    """What follows a written record (and its run's count, written with it): its callback,
    the failures list, its run's end. Returns the delivery to attempt inline, if any."""
    delivery = None
    if callback is not None:
        # A run's last job hands its callback to a delivery job, queued ahead of the run's
        # end event, as every callback was: an inline attempt would start after that event.
        last = run is not None and run.ended
        delivery = await _hand_over_callback(
            redis, result, callback, settings=settings, inline=inline and not last
        )
    # no-op unless it failed; for `mimoq inspect`
    await failures.push(redis, result, ttl_s=settings.storage.result_ttl_s)
    if run is not None and run.ended:
        # this job was the sealed run's last: this caller alone announces its end
        log.info("run.ended", run=run.run)
        await run_events.announce_end(redis, run.run, defer_s=settings.callbacks.schedule_s[0])
    return delivery


async def finish_cancelled(
    redis: Redis,
    cancelled: list[tuple[JobResult, Callback | None]],
    *,
    settings: Settings,
) -> None:
    """:func:`finish` for many jobs a cancel withdrew (docs/cancel.md), batched: the same
    records, news, callbacks and run counts, in a few round trips per page instead of a few
    per job. Each job then leaves the queue and loses its job key (so an admission that
    still finds its id in a wait list skips it). A cancelled job has no usage, and is not a
    failure (nothing for ``failures``)."""
    ttl_s = settings.storage.result_ttl_s
    for start in range(0, len(cancelled), _PAGE):
        page = cancelled[start : start + _PAGE]
        async with redis.pipeline(transaction=False) as pipe:
            for result, callback in page:
                _note_callback(result, callback)
                # sanitized: a foreign job's metadata may hold a lone surrogate
                record = wire.dumps(sanitize(result.model_dump(mode="json")))
                pipe.set(wire.result_key(result.id), record, ex=ttl_s)
                pipe.publish(wire.done_channel(result.id), result.status)
                pipe.zrem(wire.QUEUE_NAME, result.id)
                pipe.delete(wire.job_key(result.id))
                forget_tenant_job(pipe, result)
            await pipe.execute()
        for result, callback in page:
            if callback is not None:
                await schedule_callback(redis, result, callback, settings=settings)
        by_run: dict[str, list[str]] = {}
        for result, _ in page:
            if result.run is not None:
                by_run.setdefault(result.run, []).append(result.id)
        for run, ids in by_run.items():
            if await runs.record_finishes(redis, run, ids, "cancelled"):
                log.info("run.ended", run=run)
                await run_events.announce_end(redis, run, defer_s=settings.callbacks.schedule_s[0])
