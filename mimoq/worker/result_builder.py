"""The one place a job's final ``JobResult`` is built, for successes and failures alike."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import JsonValue

from mimoq.core.jobs import JobResult, SpeechJob, TranscriptionJob
from mimoq.worker.pipeline import Outcome


def succeeded(
    job: SpeechJob | TranscriptionJob,
    job_id: str,
    outcome: Outcome,
    *,
    tries: int,
    enqueued_at: float | None,
) -> JobResult:
    """The record of a job that produced its output."""
    return JobResult(
        id=job_id,
        kind=job.kind,
        status="succeeded",
        model=job.model,
        output=outcome.output,
        text=outcome.text,
        segments=outcome.segments,
        usage=outcome.usage,
        account=outcome.account,
        tenant=job.tenant,
        priority=job.priority,
        metadata=job.metadata,
        run=job.run,
        tries=tries,
        enqueued_at=enqueued_at,
        finished_at=time.time(),
    )


def failed(
    job_id: str,
    *,
    error: dict[str, Any],
    kind: Literal["speech", "transcription"] | None,
    model: str | None = None,
    metadata: JsonValue = None,
    tries: int = 1,
    enqueued_at: float | None = None,
    tenant: str | None = None,
    priority: str | None = None,
    run: str | None = None,
) -> JobResult:
    """The record of a job that ended without output; ``error`` is already safe to publish."""
    return JobResult(
        id=job_id,
        kind=kind,
        status="failed",
        model=model,
        tenant=tenant,
        priority=priority,
        error=error,
        metadata=metadata,
        run=run,
        tries=tries,
        enqueued_at=enqueued_at,
        finished_at=time.time(),
    )
