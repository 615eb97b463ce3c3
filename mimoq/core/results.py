"""Result records in Redis (``mimoq:result:<id>``) and the status of any job id."""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis.asyncio import Redis

from mimoq.core import wire
from mimoq.core.jobs import JobResult, JobStatus


async def write_result(redis: Redis, result: JobResult, *, ttl_s: int) -> None:
    await redis.set(
        wire.result_key(result.id), wire.dumps(result.model_dump(mode="json")), ex=ttl_s
    )


async def read_result(redis: Redis, job_id: str) -> JobResult | None:
    raw = await redis.get(wire.result_key(job_id))
    return None if raw is None else JobResult.model_validate_json(raw)


@dataclass(frozen=True)
class StatusReport:
    id: str
    status: JobStatus
    result: JobResult | None = None
    run_at: float | None = None  # for queued/deferred jobs: when it is due (unix seconds)
    #: a queued bulk job still waiting for admission into the queue (README, "Scheduling")
    waiting: bool = False

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"id": self.id, "status": self.status.value}
        if self.run_at is not None:
            out["run_at"] = self.run_at
        if self.waiting:
            out["waiting"] = True
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
        return StatusReport(job_id, status, run_at=run_at)
    if has_job:
        # a bulk job waiting in mimoq:wait:* has its arq record but no queue entry yet
        return StatusReport(job_id, JobStatus.queued, waiting=True)
    return StatusReport(job_id, JobStatus.not_found)
