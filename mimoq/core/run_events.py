"""A run's end event: one signed ``batch.completed`` (or ``batch.cancelled``) callback.

``mimoq.core.runs`` decides atomically, in Redis, which single caller saw a sealed run end
(a worker finishing its last job, or the producer sealing a run with nothing left); that
caller alone calls :func:`announce_end`. The event goes through the same delivery machinery
as job callbacks (a worker-written delivery record, a ``deliver_callback`` job, signing,
retries, dead letters, replay), under the delivery id ``cb-run:<run>`` (a job id cannot hold
``:``, so it never collides with a job's).
"""

from __future__ import annotations

import time
from typing import Any, Final, Literal

import structlog
from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis

from mimoq.core import deliveries, runs, tracing, wire
from mimoq.core.jobs import Callback
from mimoq.core.runs import RunRecord
from mimoq.core.webhooks import Delivery

log = structlog.get_logger("mimoq.runs")

#: The "job id" a run's end event is delivered under (``cb-`` + it is its delivery id).
RUN_EVENT_PREFIX: Final = "run:"


def event_job_id(run: str) -> str:
    return RUN_EVENT_PREFIX + run


class BatchEventPayload(BaseModel):
    """The JSON body POSTed to a run's callback when it ends (signed like job callbacks)."""

    type: Literal["batch.completed", "batch.cancelled"]
    delivery_id: str
    run: str
    status: Literal["completed", "cancelled"]
    total: int
    succeeded: int
    failed: int
    cancelled: int
    tenant: str | None
    created_at: float | None
    ended_at: float | None

    @classmethod
    def from_record(cls, record: RunRecord, delivery_id: str) -> BatchEventPayload:
        cancelled = record.cancel_requested
        return cls(
            type="batch.cancelled" if cancelled else "batch.completed",
            delivery_id=delivery_id,
            run=record.run,
            status="cancelled" if cancelled else "completed",
            total=record.total,
            succeeded=record.succeeded,
            failed=record.failed,
            cancelled=record.cancelled,
            tenant=record.tenant,
            created_at=record.created_at,
            ended_at=record.ended_at,
        )


def _callback_of(record: RunRecord) -> Callback | None:
    try:
        return None if record.callback is None else Callback.model_validate(record.callback)
    except ValidationError:  # written by hand into the record: nothing to send it to
        log.warning("run.callback_invalid", run=record.run)
        return None


async def announce_end(redis: Redis, run: str, *, defer_s: float = 0.0) -> str | None:
    """Schedule the run's end event if it has a callback; the delivery id, or None."""
    record = await runs.read_run(redis, run)
    callback = _callback_of(record) if record is not None else None
    if record is None or callback is None:
        return None
    job_id = event_job_id(run)
    delivery_id = wire.callback_job_id(job_id)
    body: dict[str, Any] = BatchEventPayload.from_record(record, delivery_id).model_dump(
        mode="json"
    )
    delivery = Delivery(
        delivery_id=delivery_id,
        job_id=job_id,
        url=callback.url,
        headers=dict(callback.headers),
        body=wire.dumps(body),
        created_at=time.time(),
        traceparent=tracing.current_traceparent(),
    )
    await deliveries.enqueue(redis, delivery, defer_s=defer_s)
    log.info("run.end_announced", run=run, delivery_id=delivery_id, type=body["type"])
    return delivery_id
