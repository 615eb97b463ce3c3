"""The arq tasks: the one place the error tree becomes arq behaviour.

The verdict comes from the pure ``mimoq.worker.decide``; this shell carries it out:
``Defer``/``RetryLater`` → ``Retry(defer=…)`` (a deferral is not counted as a try);
``Finish`` → the result record (built by ``result_builder``) and the callback. Anything
unexpected becomes a failure result too, never a crashed worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from typing import Any, Final

import structlog
from arq import Retry
from pydantic import ValidationError
from redis.asyncio import Redis

from mimoq.core import arq_compat, deliveries, tracing, wire
from mimoq.core.cancel_script import callback_of, cancelled_result, holds_ticket, is_cancelled
from mimoq.core.errors import (
    InternalError,
    InvalidRequestError,
    JobCancelled,
    MimoqError,
    PermanentError,
    UpstreamUnavailable,
)
from mimoq.core.finish import finish, finish_unless_cancelled, inline_bound_s, schedule_callback
from mimoq.core.jobs import (
    JOB_ID_PATTERN,
    Callback,
    CallbackStatus,
    JobResult,
    SpeechJob,
    TranscriptionJob,
    parse_job,
    salvage_owner,
)
from mimoq.core.settings import Settings
from mimoq.worker import fanout, metrics, result_builder, tenant_gate, tenant_usage
from mimoq.worker.callback_delivery import deliver_inline
from mimoq.worker.decide import Defer, RetryLater, RetryPolicy, decide_after_attempt
from mimoq.worker.limiter.admission import forget_admitted
from mimoq.worker.limiter.core import QUEUED_TICKET
from mimoq.worker.pipeline import Outcome, WorkerDeps, run_speech, run_transcription

log = structlog.get_logger("mimoq.worker")
_DEFERRAL_TTL_S = 7 * 86_400


async def speech_task(ctx: dict[str, Any], job: Any) -> dict[str, Any]:
    """arq task ``speech``: one text-to-speech job."""
    with _traced(ctx, job, "speech"):
        return await run_job(ctx, job, "speech")


async def transcription_task(ctx: dict[str, Any], job: Any) -> dict[str, Any]:
    """arq task ``transcription``: one speech-to-text job."""
    with _traced(ctx, job, "transcription"):
        return await run_job(ctx, job, "transcription")


def _traced(
    ctx: dict[str, Any], job: Any, kind: str | None
) -> contextlib.AbstractContextManager[None]:
    """The attempt's CONSUMER span (a no-op unless tracing is on): docs/production.md, "Tracing"."""
    return tracing.attempt_span(
        ctx["job_id"], job, kind, destination=wire.QUEUE_NAME, arq_try=int(ctx.get("job_try", 1))
    )


async def invalid_job(ctx: dict[str, Any], reason: str, raw: Any = None) -> dict[str, Any]:
    """arq task for anything ``wire.deserialize`` could not read as a job."""
    error = InvalidRequestError(f"malformed job: {reason}")
    if isinstance(raw, dict) and isinstance(raw.get("job"), dict) and len(raw) == 1:
        raw = raw["job"]  # arq's kwargs shape {"job": {...}}: salvage the job's callback
    with _traced(ctx, raw, None):
        return await run_job(ctx, raw, None, preset_error=error)


def _parse(raw: Any, kind: str) -> SpeechJob | TranscriptionJob:
    if not isinstance(raw, dict):
        raise InvalidRequestError("a job must be a JSON object")
    job = parse_job(raw)
    if job.kind != kind:
        raise InvalidRequestError(
            f"job kind {job.kind!r} was enqueued as a {kind!r} task", param="kind"
        )
    return job


def salvage(raw: Any) -> tuple[Callback | None, Any]:
    """The callback and metadata of a job that failed validation, if they are themselves valid.

    A job refused by the worker still owes its sender a failure callback and its metadata.
    """
    if not isinstance(raw, dict):
        return None, None
    callback = None
    try:
        if raw.get("callback") is not None:
            callback = Callback.model_validate(raw["callback"])
    except ValidationError:
        callback = None
    metadata = raw.get("metadata")
    try:
        if len(wire.dumps(metadata)) > 16_384:
            metadata = None
    except TypeError:
        metadata = None
    return callback, metadata


def salvage_run(raw: Any) -> str | None:
    """The run of a job that failed validation, if it names a valid one: the run counted it
    at enqueue (enqueue.lua checks the name), so its counters must see it finish."""
    run = raw.get("run") if isinstance(raw, dict) else None
    return run if isinstance(run, str) and re.fullmatch(JOB_ID_PATTERN, run) else None


def _policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        max_tries=settings.retry.max_tries,
        backoff_base_s=settings.retry.backoff_base_s,
        backoff_max_s=settings.retry.backoff_max_s,
    )


async def _attempt(
    deps: WorkerDeps, redis: Redis, job: SpeechJob | TranscriptionJob, job_id: str
) -> Outcome:
    """One try of a parsed job, within the job timeout."""
    async with asyncio.timeout(deps.settings.worker.job_timeout_s):
        if await fanout.needs_fanout(deps, job):  # over one call's limit: chunk jobs
            return await fanout.run_parent(deps, redis, job, job_id)
        # a tenant at its limit (MIMOQ_TENANT_LIMITS) waits for its window to free
        await tenant_gate.check(
            redis, job, job_id, deps.settings.usage.limits(), limiters=deps.limiters
        )
        if isinstance(job, SpeechJob):
            return await run_speech(deps, job, job_id)
        return await run_transcription(deps, job, job_id)


def _deferrals_key(job_id: str) -> str:
    return wire.DEFERRALS_PREFIX + job_id


#: The worker context's entry of what each taken job's claim read for its run, by job id
#: (``arq_compat.start_claimed``): the keys of ``first_read_keys``, read with the claim.
FIRST_READS: Final = "first_reads"


def first_read_keys(job_id: str) -> tuple[str, str, str]:
    """What decides a run before anything is tried: its deferrals so far (tries exclude
    them), its cancel marker (docs/cancel.md) and an earlier run's result."""
    return _deferrals_key(job_id), wire.cancel_key(job_id), wire.result_key(job_id)


async def run_job(
    ctx: dict[str, Any], raw: Any, kind: str | None, *, preset_error: MimoqError | None = None
) -> dict[str, Any]:
    """One run of a job: try it, ask ``decide_after_attempt`` what follows, carry that out."""
    deps: WorkerDeps = ctx["deps"]
    redis: Redis = ctx["redis"]
    job_id: str = ctx["job_id"]
    # What decides the run before anything is tried, as the claim that took the job read it
    # (one round trip less a run); read here when the job came some other way.
    first = ctx.get(FIRST_READS, {}).pop(job_id, None)
    if first is None:
        first = await redis.mget(first_read_keys(job_id))
    raw_deferrals, marker, recorded = first
    deferrals = int(raw_deferrals or 0)
    tries = max(1, ctx["job_try"] - deferrals)
    bound = log.bind(job_id=job_id, kind=kind, job_try=tries)
    # Every line logged inside this job's task (any module) carries these; model follows.
    structlog.contextvars.bind_contextvars(job_id=job_id, kind=kind, job_try=tries)
    tracing.note_try(tries)
    started = time.monotonic()

    if recorded is not None:
        existing = JobResult.model_validate_json(recorded)
        return await _already_finished(deps, redis, existing, raw, kind, bound)
    if is_cancelled(marker):
        return await _record_cancelled(deps, redis, ctx, raw, kind, bound)
    if holds_ticket(marker) and isinstance(ctx.get("score"), int | float):
        QUEUED_TICKET.set(ctx["score"] / 1000)  # its acquire waits for the slot, then asks

    job, outcome, error = await _try(deps, redis, job_id, raw, kind, tries, preset_error, bound)
    if isinstance(error, JobCancelled):
        return await _record_cancelled(deps, redis, ctx, raw, kind, bound)
    model = job.model if job else None
    verdict = decide_after_attempt(
        error, tries=tries, policy=_policy(deps.settings), rand=random.random
    )
    if isinstance(verdict, Defer):
        raise await _deferred(redis, job_id, verdict, kind, model, bound, counted=deferrals)
    if isinstance(verdict, RetryLater):
        bound.warning(
            "job.retrying",
            error_type=verdict.error.error_type,
            status=verdict.error.status,
            retry_in_s=round(verdict.delay_s, 3),
        )
        metrics.job_outcome(
            kind,
            model,
            metrics.JobOutcome.retried,
            duration_s=time.monotonic() - started,
            error_type=verdict.error.error_type,
        )
        tracing.note_outcome("retrying", error_type=verdict.error.error_type)
        raise Retry(defer=verdict.delay_s)

    if outcome is not None and job is not None:
        result = result_builder.succeeded(job, job_id, outcome, tries=tries, enqueued_at=_ts(ctx))
        callback = job.callback
        used = tenant_usage.succeeded_usage(job, outcome)
    else:
        assert verdict.error is not None
        await forget_admitted(redis, job_id, raw, kind)
        result, callback = _failed(ctx, job, raw, kind, verdict.error, tries=tries)
        used = tenant_usage.failed_usage(raw, job, kind)
    # unless a cancel came first (it answered "in flight"): atomic with cancel.lua
    finished = await finish_unless_cancelled(
        redis, result, callback, settings=deps.settings,
        usage=tenant_usage.usage_write(used, deps.settings),
        inline_callback=_inline_fits(deps.settings, started),
        # a job never deferred has no count to drop: no DEL per job
        drop_keys=[_deferrals_key(job_id)] if deferrals else [],
    )  # fmt: skip
    if finished is None:
        return await _discard_and_record_cancelled(deps, redis, ctx, raw, kind, bound, outcome)
    _log_final(finished.result, bound, ran_s=time.monotonic() - started)
    if finished.delivery is not None:  # its first attempt, here (the job is its backstop)
        await deliver_inline(ctx, finished.delivery, record=finished.record)
    return _summary(finished.result)


async def _deferred(
    redis: Redis,
    job_id: str,
    verdict: Defer,
    kind: str | None,
    model: str | None,
    bound: structlog.typing.FilteringBoundLogger,
    *,
    counted: int,
) -> Retry:
    """Count a deferral (it spends no try) and say so; the ``Retry`` that carries it out.
    ``counted``: the job's deferrals as its run read them."""
    # the count's TTL is set once, when its first deferral creates it (a week outlives any
    # job's expiry; NX leaves a set TTL alone), in the INCR's round trip; a count the run
    # read has its TTL already (the deferrals of a job deferred more than once, issue #22)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.incr(_deferrals_key(job_id))
        if not counted:
            pipe.expire(_deferrals_key(job_id), _DEFERRAL_TTL_S, nx=True)
        await pipe.execute()
    bound.debug("job.deferred", reason=verdict.reason, retry_in_s=round(verdict.delay_s, 3))
    metrics.job_deferred(kind, model, verdict.reason, deferred_s=verdict.delay_s)
    tracing.note_outcome("deferred", deferral_reason=verdict.reason)
    return _deferral_retry(verdict)


def _inline_fits(settings: Settings, started: float) -> bool:
    """Whether this run makes its callback's first attempt itself: inline callbacks are on,
    and the attempt fits in what is left of the job's timeout (a run cut off by it would be
    arq's failure; the delivery job makes the attempt instead)."""
    left = settings.worker.job_timeout_s - (time.monotonic() - started)
    return settings.callbacks.inline_first and left > inline_bound_s(settings.callbacks.timeout_s)


def _deferral_retry(verdict: Defer) -> Retry:
    """arq's retry for a deferral: at the queue place the limiter has set (it follows the
    job's slot), else ``delay_s`` from now."""
    if verdict.queued:
        return arq_compat.retry_where_queued()
    return Retry(defer=verdict.delay_s)


def _failed(
    ctx: dict[str, Any],
    job: SpeechJob | TranscriptionJob | None,
    raw: Any,
    kind: str | None,
    error: dict[str, Any],
    *,
    tries: int,
) -> tuple[JobResult, Callback | None]:
    """The failed record of a job, and where to call back; what a refused job carries is
    salvaged from its raw form."""
    callback, metadata = (job.callback, job.metadata) if job else salvage(raw)
    tenant, lane = (job.tenant, job.priority) if job else salvage_owner(raw)
    result = result_builder.failed(
        ctx["job_id"],
        run=job.run if job else salvage_run(raw),
        error=error,
        kind=job.kind if job else _kind_of(raw, kind),
        model=job.model if job else None,
        metadata=metadata,
        tries=tries,
        enqueued_at=_ts(ctx),
        tenant=tenant,
        priority=lane,
    )
    return result, callback


async def _discard_and_record_cancelled(
    deps: WorkerDeps,
    redis: Redis,
    ctx: dict[str, Any],
    raw: Any,
    kind: str | None,
    bound: structlog.typing.FilteringBoundLogger,
    outcome: Outcome | None,
) -> dict[str, Any]:
    """The job's result write was refused: its cancel came first, while the call was ending
    (the cancel answered "in flight"). Its output is discarded and it is recorded as
    cancelled; its usage was counted by the refused write (the call was made)."""
    if outcome is not None:
        await asyncio.to_thread(deps.storage.delete, outcome.output.key)
    return await _record_cancelled(deps, redis, ctx, raw, kind, bound)


async def _record_cancelled(
    deps: WorkerDeps,
    redis: Redis,
    ctx: dict[str, Any],
    raw: Any,
    kind: str | None,
    bound: structlog.typing.FilteringBoundLogger,
) -> dict[str, Any]:
    """A cancelled job (docs/cancel.md): recorded as such, without (or after closing) its
    MiMo call; whatever admission place it held goes back at once. (A call that answered
    before the cancel was recorded had its usage counted by the refused result write.)"""
    job_id: str = ctx["job_id"]
    await forget_admitted(redis, job_id, raw, kind)
    fields = raw if isinstance(raw, dict) else {}
    result = cancelled_result(job_id, fields, enqueued_at=_ts(ctx))
    result = await finish(redis, result, callback_of(fields), settings=deps.settings)
    await redis.delete(_deferrals_key(job_id))
    await fanout.remove_cancelled_chunks(deps, redis, job_id)
    bound.info("job.cancelled")
    metrics.job_outcome(result.kind, result.model, metrics.JobOutcome.cancelled)
    return _summary(result)


async def _already_finished(
    deps: WorkerDeps,
    redis: Redis,
    existing: JobResult,
    raw: Any,
    kind: str | None,
    bound: structlog.typing.FilteringBoundLogger,
) -> dict[str, Any]:
    """A previous run recorded the result but died before arq marked the job done: don't
    call MiMo again; make sure the callback is on its way."""
    callback, _ = salvage(raw)
    if callback is not None and existing.callback.status == CallbackStatus.pending:
        await schedule_callback(redis, existing, callback, settings=deps.settings)
        if existing.callback.attempts == 0 and deps.settings.callbacks.inline_first:
            # The run before died in its inline first attempt (or before it): that
            # attempt's backstop job goes now, not the backstop's wait later.
            await deliveries.hurry(redis, wire.callback_job_id(existing.id))
    bound.info("job.already_finished", status=existing.status)
    metrics.job_outcome(kind, existing.model, metrics.JobOutcome.already_finished)
    return _summary(existing)


async def _try(
    deps: WorkerDeps,
    redis: Redis,
    job_id: str,
    raw: Any,
    kind: str | None,
    tries: int,
    preset_error: MimoqError | None,
    bound: structlog.typing.FilteringBoundLogger,
) -> tuple[SpeechJob | TranscriptionJob | None, Outcome | None, MimoqError | None]:
    """Parse and attempt the job; every failure comes back as a ``MimoqError``, never raised."""
    if preset_error is not None or kind is None:
        return None, None, preset_error
    job: SpeechJob | TranscriptionJob | None = None
    try:
        job = _parse(raw, kind)
        structlog.contextvars.bind_contextvars(model=job.model)
        if tries > deps.settings.retry.max_tries:
            # Each try that never finished (a killed worker) still counted: stop a
            # poison job from taking workers down forever.
            raise PermanentError(f"gave up after {tries - 1} tries that did not finish")
        attempt = _attempt(deps, redis, job, job_id)
        return job, await deps.running.run(job_id, attempt), None
    except TimeoutError:
        limit = deps.settings.worker.job_timeout_s
        return job, None, UpstreamUnavailable(f"the job took longer than {limit:g} s")
    except MimoqError as exc:
        return job, None, exc
    except Exception:
        bound.exception("job.internal_error")
        return job, None, InternalError("internal error in the worker; see its logs")


def _log_final(
    result: JobResult, bound: structlog.typing.FilteringBoundLogger, *, ran_s: float
) -> None:
    metrics.job_outcome(
        result.kind, result.model, metrics.JobOutcome(result.status), duration_s=ran_s
    )
    error_type = (result.error or {}).get("type")
    tracing.note_outcome(result.status, error_type=str(error_type) if error_type else None)
    if result.status == "succeeded":
        bound.info("job.succeeded", output=result.output.key if result.output else None)
    else:
        bound.warning(
            "job.failed",
            error_type=(result.error or {}).get("type"),
            status=(result.error or {}).get("status"),
        )


def _kind_of(raw: Any, kind: str | None) -> Any:
    if kind is not None:
        return kind
    if isinstance(raw, dict) and raw.get("kind") in ("speech", "transcription"):
        return raw["kind"]
    return None


def _ts(ctx: dict[str, Any]) -> float | None:
    enqueued = ctx.get("enqueue_time")
    return enqueued.timestamp() if enqueued is not None and enqueued.timestamp() > 0 else None


def _summary(result: JobResult) -> dict[str, Any]:
    # What arq logs as the task's return value: small, and free of transcripts and metadata.
    return {"status": result.status, "output": result.output.key if result.output else None}
