"""Result records in Redis (``mimoq:result:<id>``) and the status of any job id."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from mimoq.core import scripts, wire
from mimoq.core.deliveries import HandOver
from mimoq.core.errors import InternalError
from mimoq.core.jobs import JobResult, JobStatus
from mimoq.core.runs import RunCount
from mimoq.core.scripts.replies import (
    ResultWrite,
    ResultWritten,
    RunCounted,
    decode_result_hand_over,
    decode_result_write,
)
from mimoq.core.splitting.plan import chunk_of
from mimoq.core.usage_windows import UsageWrite, held_reason

#: The only str content UTF-8 cannot encode: surrogate code points standing alone.
_SURROGATE = re.compile("[\ud800-\udfff]")
log = structlog.get_logger("mimoq.core")
_REPLACED_NOTE = "text that was not valid Unicode was replaced by U+FFFD"


async def write_result(redis: Redis, result: JobResult, *, ttl_s: int) -> None:
    await redis.set(
        wire.result_key(result.id), wire.dumps(result.model_dump(mode="json")), ex=ttl_s
    )


async def write_result_safely(
    redis: Redis,
    result: JobResult,
    *,
    ttl_s: int,
    usage: UsageWrite | None = None,
    run: RunCount | None = None,
) -> JobResult:
    """Write ``result``, or, if it cannot be encoded, a failure result that can; returns
    what was written (the callback body must be built from that).

    A job's metadata written raw by a foreign producer may hold a lone surrogate
    (``"\\udc00"``): it decodes, but no UTF-8 encoder takes it back, so the record would
    never be stored and the job would vanish after MiMo was paid. Instead, every string is
    sanitized and the result becomes a failure saying why (a failed one keeps its error);
    the output file, already in storage, stays listed. Redis errors still raise.
    ``usage`` (the job's usage totals) and ``run`` (its count in its run) ride on the same
    round trip as the write.
    """
    result, text = _encodable(result)
    # One round trip: the record, then the news of it (a message nobody hears costs nothing;
    # a waiter that misses it finds the record by its fallback read), the job leaving its
    # tenant's index of unfinished jobs, and the job's usage.
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(wire.result_key(result.id), text, ex=ttl_s)
        pipe.publish(wire.done_channel(result.id), result.status)
        forget_tenant_job(pipe, result)
        if run is not None:
            run.queue(pipe, result.status)
        counted = usage is not None and usage.queue(pipe)
        written, published, _, *rest = await pipe.execute(raise_on_error=False)
    if isinstance(written, Exception):
        raise written
    if isinstance(published, Exception):  # e.g. an ACL without the channel: waiters poll
        log.warning("result.publish_failed", job_id=result.id, error=type(published).__name__)
    if run is not None:
        await run.settle(redis, rest.pop(0), result.status)
    if counted and usage is not None:
        await usage.settle(redis, rest[0])
    return result


async def write_result_unless_cancelled(
    redis: Redis,
    result: JobResult,
    *,
    ttl_s: int,
    usage: UsageWrite | None = None,
    run: RunCount | None = None,
    drop_keys: Sequence[str] = (),
    hand_over: Callable[[JobResult], HandOver] | None = None,
) -> tuple[JobResult, str] | None:
    """:func:`write_result_safely` for the result of a job a worker ran, made atomic with
    cancel.lua (``result_unless_cancelled.lua``): None, and nothing written, when the job's
    cancel marker says it was cancelled first — its cancel answered "in flight", so the
    caller records it as cancelled instead. The marker check is folded into the write: no
    extra command, and so is ``run``, the job's count in its run (when written). ``usage`` is
    written either way (the call was made). ``drop_keys``: the run's own keys it no longer
    needs, deleted in the same round trip either way. ``hand_over`` (a job of no run with a
    callback): its callback's delivery, made of the result as written, is handed over by
    the same script when the record is written (``result_hand_over.lua``); its ``queued``
    says whether it was. Returns the result as written and its text."""
    result, text = _encodable(result)
    delivery = hand_over(result) if hand_over is not None and run is None else None
    keys = [wire.result_key(result.id), wire.cancel_key(result.id)]
    args = [text, str(ttl_s), wire.done_channel(result.id), result.status]
    if delivery is not None:
        script = scripts.named("result_hand_over")
        keys += delivery.keys
        args += delivery.args
    else:
        # after the run scripts' prelude: it counts the job in its run in the same call
        script = scripts.named("result_unless_cancelled")
    if run is not None:
        keys += run.keys()
        args += [run.run, run.job_id, run.at]
    # A bare EVALSHA on the pipeline (a registered script there would cost a SCRIPT EXISTS
    # round trip first); after NOSCRIPT the write alone runs again, loading it.
    chunk = _chunk_done_call(result)
    async with redis.pipeline(transaction=False) as pipe:
        script.queue(pipe, keys, args)
        # (refused, the job is recorded as cancelled through ``finish``, which forgets it too)
        forget_tenant_job(pipe, result)
        counted = usage is not None and usage.queue(pipe)
        if chunk is not None:
            scripts.named("fanout_chunk_done").queue(pipe, *chunk)
        if drop_keys:  # (queued last: its reply is not read)
            pipe.delete(*drop_keys)
        written, _, *rest = await pipe.execute(raise_on_error=False)
    reply = await script.settle(redis, written, keys, args)
    if delivery is not None:
        handed = decode_result_hand_over(reply)
        delivery.queued = handed.queued
        write = ResultWrite(handed.written, RunCounted.NOT_COUNTED)
    else:
        write = decode_result_write(reply)
    if counted and usage is not None:
        await usage.settle(redis, rest.pop(0))
    if chunk is not None:
        await scripts.named("fanout_chunk_done").settle(redis, rest.pop(0), *chunk)
    if run is not None:
        run.note(write.counted)
    if write.written is ResultWritten.CANCELLED:
        return None
    if write.written is ResultWritten.UNPUBLISHED:  # e.g. an ACL without the channel
        log.warning("result.publish_failed", job_id=result.id, error="NoPermissionError")
    return result, text


def _chunk_done_call(result: JobResult) -> tuple[list[str], list[str | int]] | None:
    """KEYS and ARGV of ``fanout_chunk_done.lua`` for the result of a long job's chunk (its
    parent counts it, and is woken by the last one: worker/fanout.py); None for any other."""
    chunk = chunk_of(result.id, result.metadata)
    if chunk is None:
        return None
    parent, index = chunk
    return [wire.fanout_wake_key(parent), wire.QUEUE_NAME], [result.id, index, parent]


def forget_tenant_job(pipe: Pipeline, result: JobResult) -> None:
    """Queue the finished job's removal from its tenant's index of unfinished jobs (the one
    ``mimoq cancel --tenant`` reads; enqueue.lua added it). An error (say an ACL without the
    key) is left to the cancel, which prunes ids it finds finished."""
    pipe.zrem(wire.tenant_jobs_key(result.tenant), result.id)


def _encodable(result: JobResult) -> tuple[JobResult, str]:
    """``result`` and its JSON text, or, if it cannot be encoded, its failure (see above)."""
    try:
        text = wire.dumps(result.model_dump(mode="json"))
        text.encode("utf-8")
    except (UnicodeError, TypeError, ValueError) as exc:
        result = unencodable_to_failure(result, exc)
        text = wire.dumps(result.model_dump(mode="json"))
    return result, text


def sanitize(value: Any) -> Any:
    """``value`` (JSON data) with every string made encodable (lone surrogates → U+FFFD)."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {sanitize(k): sanitize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [sanitize(v) for v in value]
    return value


def unencodable_to_failure(result: JobResult, exc: BaseException) -> JobResult:
    """The failure result recorded for a result that could not be encoded (see above)."""
    why = (
        "it held text that is not valid Unicode (a lone surrogate such as \\udc00)"
        if isinstance(exc, UnicodeError)
        else f"it could not be serialized ({type(exc).__name__})"
    )
    data = sanitize(result.model_dump(mode="json"))
    if result.status == "failed" and isinstance(data.get("error"), dict):
        data["error"]["note"] = _REPLACED_NOTE
    else:
        message = f"the result could not be recorded as produced: {why}; {_REPLACED_NOTE}"
        data["error"] = InternalError(message).to_dict()
    data["status"] = "failed"
    return JobResult.model_validate(data)


async def read_result(redis: Redis, job_id: str) -> JobResult | None:
    raw = await redis.get(wire.result_key(job_id))
    return None if raw is None else JobResult.model_validate_json(raw)


@dataclass(frozen=True)
class StatusReport:
    id: str
    status: JobStatus
    result: JobResult | None = None
    run_at: float | None = None  # for queued/deferred jobs: when it is due (unix seconds)
    #: a queued bulk job still waiting for admission into the queue (docs/scheduling.md),
    #: or a job whose tenant is held at its limit
    waiting: bool = False
    #: why it waits, when its tenant is held at its limit (docs/usage.md)
    reason: str | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"id": self.id, "status": self.status.value}
        if self.run_at is not None:
            out["run_at"] = self.run_at
        if self.waiting:
            out["waiting"] = True
        if self.reason is not None:
            out["reason"] = self.reason
        if self.result is not None:
            out["result"] = self.result.model_dump(mode="json")
        return out


async def job_status(redis: Redis, job_id: str) -> StatusReport:
    """queued / deferred / in_progress / succeeded / failed / not_found, from Redis alone.

    A bulk job waiting for admission is ``queued`` with ``waiting`` set.
    """
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(wire.result_key(job_id))
        pipe.exists(wire.in_progress_key(job_id))
        pipe.zscore(wire.QUEUE_NAME, job_id)
        pipe.exists(wire.job_key(job_id))
        raw, in_progress, score, has_job = await pipe.execute()
    if raw is not None:
        result = JobResult.model_validate_json(raw)
        return StatusReport(job_id, JobStatus(result.status), result)
    if in_progress:
        return StatusReport(job_id, JobStatus.in_progress)
    if score is not None:
        run_at = score / 1000
        status = JobStatus.deferred if run_at > time.time() else JobStatus.queued
        reason = await held_reason(redis, job_id) if status == JobStatus.deferred else None
        return StatusReport(
            job_id, status, run_at=run_at, waiting=reason is not None, reason=reason
        )
    if has_job:
        # a bulk job waiting in mimoq:wait:* has its arq record but no queue entry yet
        reason = await held_reason(redis, job_id)
        return StatusReport(job_id, JobStatus.queued, waiting=True, reason=reason)
    return StatusReport(job_id, JobStatus.not_found)
