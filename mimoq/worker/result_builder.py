"""The one place a job's final ``JobResult`` is built, for successes and failures alike."""

from __future__ import annotations

import re
import time
from typing import Any, Literal

from pydantic import JsonValue

from mimoq.core.jobs import LANES, TENANT_PATTERN, JobResult, SpeechJob, TranscriptionJob
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


def salvage_owner(raw: Any) -> tuple[str | None, str | None]:
    """The tenant and lane a job that failed validation names, each only if it is valid.

    The lane is what the enqueue script scheduled it in: a job naming none ran
    ``interactive``. Anything else (not a JSON object, a malformed name) is left out.
    """
    if not isinstance(raw, dict):
        return None, None
    tenant = raw.get("tenant")
    priority = raw.get("priority", LANES[0])
    return (
        tenant if isinstance(tenant, str) and re.fullmatch(TENANT_PATTERN, tenant) else None,
        priority if priority in LANES else None,
    )
