"""The cancel script (``cancel.lua``), its answers, and the record of a cancelled job.

Shared by the producer (``mimoq.producer.cancel``, which runs the script and records what
it withdrew) and the worker (which records the jobs it was holding, or that a foreign
producer's cancel left at the head of the queue). docs/cancel.md.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from typing import Any, Final

from pydantic import ValidationError
from redis.asyncio import Redis

from mimoq.core import scripts, wire
from mimoq.core.jobs import (
    JOB_ID_PATTERN,
    MAX_METADATA_CHARS,
    Callback,
    JobResult,
    salvage_owner,
)
from mimoq.core.scripts.replies import ScriptAnswer, decode_cancel

#: Ids per script call at most (the script refuses more): a longer list is split.
MAX_IDS_PER_CALL: Final = 10_000
#: The marker's value while a worker's grant of the job stands (the acquire script sets it).
GRANTED: Final = "granted"
#: The marker's value once the job is cancelled (the cancel script sets it).
CANCELLED: Final = "cancelled"
#: How the marker starts while the job holds a limiter ticket (then the limiter's key base).
TICKET_MARK: Final = "ticket "


def holds_ticket(marker: bytes | str | None) -> bool:
    """Whether a cancel marker says the job holds a limiter ticket (``ticket <limiter>``,
    written by the limiter when it gives one)."""
    if isinstance(marker, bytes):
        return marker.startswith(TICKET_MARK.encode())
    return marker is not None and marker.startswith(TICKET_MARK)


def is_cancelled(marker: bytes | str | None) -> bool:
    """Whether a cancel marker (``mimoq:cancel:<id>``, as Redis returned it: bytes, or str
    on a decoding connection, or None when absent) says the job is cancelled."""
    if isinstance(marker, bytes):
        return marker == CANCELLED.encode()
    return marker == CANCELLED


def cancel_script() -> str:
    """The Lua source of the atomic cancel (also usable from redis-cli: see the README)."""
    return scripts.named("cancel").text


async def run_cancel_script(
    redis: Redis, ids: Sequence[str], *, mode: str
) -> tuple[list[ScriptAnswer], list[ScriptAnswer]]:
    """Run cancel.lua over ``ids`` (any number, in calls of ``MAX_IDS_PER_CALL``): the
    answers for ``ids``, in order, and those for the chunk jobs cancelled with them."""
    script = scripts.named("cancel")
    answers: list[ScriptAnswer] = []
    chunks: list[ScriptAnswer] = []
    for start in range(0, len(ids), MAX_IDS_PER_CALL):
        part = list(ids[start : start + MAX_IDS_PER_CALL])
        got = decode_cancel(await script.run(redis, [], [mode, *part]))
        answers += got[: len(part)]
        chunks += got[len(part) :]
    return answers, chunks


def _valid(value: Any, pattern: str) -> str | None:
    return value if isinstance(value, str) and re.fullmatch(pattern, value) else None


def parse_envelope(envelope: str) -> dict[str, Any]:
    """An arq job's JSON as a dict (``{}`` if it is not one)."""
    try:
        data = json.loads(envelope)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def job_of_envelope(envelope: dict[str, Any]) -> dict[str, Any]:
    """The job fields of a parsed arq job (``{}`` if it holds none readable)."""
    job = (envelope.get("k") or {}).get("job") if isinstance(envelope.get("k"), dict) else None
    return job if isinstance(job, dict) else {}


def callback_of(job: dict[str, Any]) -> Callback | None:
    """The job's callback if it names a valid one (a cancelled job still owes it its event)."""
    try:
        return Callback.model_validate(job["callback"]) if job.get("callback") else None
    except ValidationError:
        return None


def cancelled_result(job_id: str, job: dict[str, Any], *, enqueued_at: float | None) -> JobResult:
    """The record of a job cancelled before it produced anything (``job``: its raw fields,
    each kept only if valid, as for a job refused by the worker)."""
    metadata = job.get("metadata")
    try:
        if len(wire.dumps(metadata)) > MAX_METADATA_CHARS:
            metadata = None
    except (TypeError, ValueError):
        metadata = None
    kind = job.get("kind")
    model = job.get("model")
    tenant, priority = salvage_owner(job)
    return JobResult(
        id=job_id,
        kind=kind if kind in ("speech", "transcription") else None,
        status="cancelled",
        model=model if isinstance(model, str) and len(model) <= 128 else None,
        error={"type": "cancelled", "message": "the job was cancelled"},
        metadata=metadata,
        tenant=tenant,
        priority=priority,
        run=_valid(job.get("run"), JOB_ID_PATTERN),
        tries=0,
        enqueued_at=enqueued_at,
        finished_at=time.time(),
    )


def enqueued_at_of(envelope: dict[str, Any]) -> float | None:
    """When a parsed arq job was enqueued (its ``et``, ms), in seconds."""
    et = envelope.get("et")
    return et / 1000 if isinstance(et, int) and et > 0 else None
