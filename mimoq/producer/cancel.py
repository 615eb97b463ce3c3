"""Cancel jobs, a run, or a tenant's queued work, with one meaning everywhere (docs/cancel.md).

``cancel_jobs`` runs cancel.lua (``mimoq.core.cancel_script``) and records every job it
withdrew as ``cancelled`` through the one finish path (``mimoq.core.finish``: the record,
its ``job.cancelled`` callback, the run's counters). The CLI, ``Producer.cancel``, the HTTP
front door and the dashboard all come through here. A job a worker holds is recorded by
that worker (within 2 s, its MiMo call closed if it had started).

Cost: O(jobs cancelled) Redis work, in one script call per 10,000 ids plus the records.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import structlog
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError

from mimoq.core import dialect_constants as dc
from mimoq.core import run_events, runs, wire
from mimoq.core.cancel_script import (
    callback_of,
    cancelled_result,
    enqueued_at_of,
    job_of_envelope,
    parse_envelope,
    run_cancel_script,
)
from mimoq.core.finish import finish_cancelled
from mimoq.core.jobs import TENANT_PATTERN, check_run_name
from mimoq.core.objstore import open_storage
from mimoq.core.scripts.replies import Answer, ScriptAnswer
from mimoq.core.settings import Settings
from mimoq.core.splitting.plan import child_id, chunks_prefix

log = structlog.get_logger("mimoq.producer")


class CancelStatus(StrEnum):
    """The answer for one id, the same from every door."""

    cancelled = "cancelled"  # cancelled now, or earlier (idempotent)
    already_finished = "already_finished"  # it ended otherwise; left as it is
    not_found = "not_found"
    invalid = "invalid"  # a malformed id (the CLI exits non-zero)


@dataclass(frozen=True)
class CancelAnswer:
    id: str
    status: CancelStatus
    #: ``already_finished``: how it finished ("succeeded" or "failed").
    job_status: str | None = None
    #: Its MiMo call had been granted: the worker closes it within 2 s and records it.
    in_flight: bool = False
    #: ``invalid``: what is wrong with the id.
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "status": self.status.value}
        if self.job_status is not None:
            out["job_status"] = self.job_status
        if self.in_flight:
            out["in_flight"] = True
        if self.error is not None:
            out["error"] = self.error
        return out


_STATUS_OF: Final = {
    Answer.cancelled: CancelStatus.cancelled,
    Answer.stopping: CancelStatus.cancelled,
    Answer.in_flight: CancelStatus.cancelled,
    Answer.already_cancelled: CancelStatus.cancelled,
    Answer.already_finished: CancelStatus.already_finished,
    Answer.not_found: CancelStatus.not_found,
    Answer.invalid: CancelStatus.invalid,
}


def _public(answer: ScriptAnswer) -> CancelAnswer:
    status = _STATUS_OF[answer.answer]
    return CancelAnswer(
        id=answer.id,
        status=status,
        job_status=answer.detail if status is CancelStatus.already_finished else None,
        in_flight=answer.answer is Answer.in_flight,
        error=answer.detail if status is CancelStatus.invalid else None,
    )


async def _record_all(redis: Redis, withdrawn: list[ScriptAnswer], settings: Settings) -> None:
    """Record the withdrawn jobs as cancelled (``core.finish.finish_cancelled``, batched)."""
    cancelled = []
    for answer in withdrawn:
        envelope = parse_envelope(answer.detail)
        job = job_of_envelope(envelope)
        result = cancelled_result(answer.id, job, enqueued_at=enqueued_at_of(envelope))
        cancelled.append((result, callback_of(job)))
    await finish_cancelled(redis, cancelled, settings=settings)


async def _remove_chunk_files(
    answers: list[ScriptAnswer], chunks: list[ScriptAnswer], settings: Settings
) -> None:
    """Delete the chunk files (``chunks/<parent>/``, local disk or object storage) of the long
    jobs this cancel withdrew and recorded: no worker runs them again to clean up. A parent
    is known by its first chunk among the cascaded answers (no Redis read). A job a worker
    holds is cleaned up by that worker when it records it. Best effort: the cancel is already
    recorded, so a storage this caller cannot reach leaves the files to storage's clean-up."""
    cascaded = {chunk.id for chunk in chunks}
    parents = [
        a.id for a in answers if a.answer is Answer.cancelled and child_id(a.id, 0) in cascaded
    ]
    if not parents:
        return
    try:
        storage = open_storage(settings)
        for parent in parents:
            await asyncio.to_thread(storage.delete_prefix, chunks_prefix(parent))
    except Exception as exc:  # any storage error (OSError, obstore's): the cancel stands
        log.warning("cancel.chunks_left", parents=len(parents), error=type(exc).__name__)


async def cancel_jobs(
    redis: Redis, ids: Iterable[str], *, settings: Settings
) -> list[CancelAnswer]:
    """Cancel every job of ``ids``; one answer per distinct id, in order (chunk jobs of a
    cancelled long job are cancelled with it and not listed).

    A caller allowed to write result records (a worker's or an operator's Redis user)
    records the withdrawn jobs at once. A least-privilege producer cannot: its cancel
    leaves them at the head of the queue, where the next free worker records them, still
    without calling MiMo.
    """
    unique = list(dict.fromkeys(ids))
    if not unique:
        return []
    try:
        answers, chunks = await run_cancel_script(redis, unique, mode="caller")
        withdrawn = [a for a in answers + chunks if a.answer is Answer.cancelled]
        try:
            await _record_all(redis, withdrawn, settings)
        except NoPermissionError:
            # cannot write results: hand what is left to the workers (idempotent)
            await run_cancel_script(redis, [a.id for a in withdrawn], mode="queue")
        else:
            await _remove_chunk_files(answers, chunks, settings)
    except NoPermissionError:
        answers, _ = await run_cancel_script(redis, unique, mode="queue")
    return [_public(a) for a in answers]


async def _members(redis: Redis, key: str) -> list[str]:
    members = redis.sscan_iter(key, count=1000)
    return [m.decode() if isinstance(m, bytes) else str(m) async for m in members]


async def cancel_jobs_of_run(redis: Redis, run: str, *, settings: Settings) -> list[CancelAnswer]:
    """Cancel every unfinished job of ``run`` (its index ``mimoq:run:<run>:pending``); a
    malformed name is an InvalidRequestError."""
    check_run_name(run)
    # the run's end is then announced as batch.cancelled (mimoq.core.run_events)
    if await runs.mark_cancelling(redis, run):  # nothing of it was left
        await run_events.announce_end(redis, run)
    return await cancel_jobs(
        redis, await _members(redis, wire.run_pending_key(run)), settings=settings
    )


def _text(values: Sequence[Any]) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


async def _admitted_of(redis: Redis, tenant: str, ahead: list[str]) -> list[str]:
    """Which of a model's admitted bulk jobs are ``tenant``'s (their jobs name it)."""
    if not ahead:
        return []
    envelopes = await redis.mget([wire.job_key(i) for i in ahead])
    mine = []
    for job_id, envelope in zip(ahead, envelopes, strict=True):
        if envelope is None:
            continue
        text = envelope.decode() if isinstance(envelope, bytes) else str(envelope)
        if (job_of_envelope(parse_envelope(text)).get("tenant") or wire.NO_TENANT) == tenant:
            mine.append(job_id)
    return mine


async def tenant_queued_ids(redis: Redis, tenant: str, models: Sequence[str]) -> list[str]:
    """The ids of ``tenant``'s jobs of ``models`` not yet granted a call: its wait lists in
    both lanes, its interactive jobs in the queue, and its bulk jobs admitted ahead (the
    model's short look-ahead, read job by job). O(the tenant's waiting jobs)."""
    ids: list[str] = []
    for model in models:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.lrange(wire.wait_list_key(model, tenant, "bulk"), 0, -1)
            pipe.lrange(wire.wait_list_key(model, tenant, "interactive"), 0, -1)
            pipe.zrange(wire.interactive_admitted_key(model, tenant), 0, -1)
            pipe.zrange(wire.admitted_key(model), 0, -1)
            bulk, interactive, admitted, ahead = await pipe.execute()
        ids += _text(bulk) + _text(interactive) + _text(admitted)
        ids += await _admitted_of(redis, tenant, _text(ahead))
    return list(dict.fromkeys(ids))


def _model_of(job: dict[str, Any]) -> str:
    """A job's model as enqueue.lua reads it (its kind's default when it names none)."""
    model = job.get("model")
    if isinstance(model, str) and model:
        return model
    return dc.ASR_MODEL if job.get("kind") == wire.TASK_TRANSCRIPTION else dc.TTS_MODEL


async def tenant_indexed_ids(redis: Redis, tenant: str, model: str | None) -> list[str]:
    """The ids in ``tenant``'s index of unfinished jobs (``mimoq:tenant-jobs:<tenant>``)
    that no worker holds (jobs in flight are left to finish), of ``model`` if given: the
    jobs deferred by their producer or waiting for a retry, which no wait list holds.
    O(the tenant's unfinished jobs). Ids whose job is gone stay in: their cancel answers
    ``not_found`` (or ``already_finished``) and they are pruned then."""
    members = _text(await redis.zrange(wire.tenant_jobs_key(tenant), 0, -1))
    ids = [m for m in members if m != wire.TENANT_JOBS_TTL_MEMBER]
    if not ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.exists(wire.in_progress_key(job_id))
        if model is not None:
            pipe.mget([wire.job_key(job_id) for job_id in ids])
        read = await pipe.execute()
    held, envelopes = read[: len(ids)], read[len(ids)] if model is not None else []
    keep = [job_id for job_id, busy in zip(ids, held, strict=True) if not busy]
    if model is None:
        return keep
    model_of = {
        job_id: _model_of(job_of_envelope(parse_envelope(_text([raw])[0])))
        for job_id, raw in zip(ids, envelopes, strict=True)
        if raw is not None
    }
    return [job_id for job_id in keep if model_of.get(job_id, model) == model]


async def _prune_tenant_index(redis: Redis, tenant: str, answers: list[CancelAnswer]) -> None:
    """Drop the ids the cancel found gone or finished from the tenant's index: a job that
    vanished without a record (its job key expired, or was deleted by hand) never reaches
    the finish path that would have taken it out. (Cancelled ones left with their record.)"""
    stale = [
        a.id for a in answers if a.status in (CancelStatus.not_found, CancelStatus.already_finished)
    ]
    if stale:
        await redis.zrem(wire.tenant_jobs_key(tenant), *stale)


async def cancel_tenant(
    redis: Redis, tenant: str, *, model: str | None = None, settings: Settings
) -> list[CancelAnswer]:
    """Cancel ``tenant``'s queued work (of ``model`` only, if given): every job of it that
    waits for admission or for its slot, is deferred by its producer, or waits for a retry
    (its index ``mimoq:tenant-jobs:<tenant>``). Jobs in flight are left to finish. ``_`` is
    the jobs that name no tenant. O(the tenant's unfinished jobs), not O(queue)."""
    if tenant != wire.NO_TENANT and not re.fullmatch(TENANT_PATTERN, tenant):
        raise ValueError("tenant must be 1-64 characters of A-Z a-z 0-9 . _ - (or _ for none)")
    if model is not None:
        if model not in dc.ALL_MODELS:
            raise ValueError(f"model must be one of {', '.join(dc.ALL_MODELS)}, got {model!r}")
        models: list[str] = [model]
    else:
        found = _text(list(await redis.smembers(wire.WAIT_MODELS_KEY)))  # type: ignore[misc]
        models = list(dict.fromkeys([*dc.ALL_MODELS, *found]))
    # the wait lists and admitted sets still reach jobs enqueued before the index existed
    ids = await tenant_queued_ids(redis, tenant, models)
    ids += await tenant_indexed_ids(redis, tenant, model)
    answers = await cancel_jobs(redis, ids, settings=settings)
    await _prune_tenant_index(redis, tenant, answers)
    return answers
