"""A run's end event (mimoq.core.run_events): one batch.completed / batch.cancelled delivery
per run, scheduled by whichever finish ended it, however many finish at once."""

from __future__ import annotations

import asyncio
import json
import time

from arq.connections import ArqRedis

from mimoq.core import deliveries, runs, wire
from mimoq.core.finish import finish
from mimoq.core.jobs import JobResult
from mimoq.core.settings import Settings

HOOK = {"url": "https://hooks.example/batches", "headers": {"Authorization": "Bearer s3cret"}}
SETTINGS = Settings(callbacks={"schedule_s": [0, 1]})


async def enqueue(redis: ArqRedis, job_id: str, run: str = "r1") -> None:
    job = {"kind": "speech", "input": "x", "priority": "bulk", "run": run, "tenant": "team-a"}
    assert (
        await redis.eval(
            wire.enqueue_script(), 4, *wire.enqueue_keys(job_id), job_id, json.dumps(job)
        )
        == 1
    )


def result(job_id: str, status: str = "succeeded") -> JobResult:
    return JobResult(
        id=job_id,
        kind="speech",
        status=status,
        finished_at=time.time(),
        run="r1",  # type: ignore[arg-type]
    )


async def event_jobs(redis: ArqRedis) -> list[str]:
    return [m.decode() for m in await redis.zrange(wire.QUEUE_NAME, 0, -1) if m.startswith(b"cb-")]


async def test_the_last_jobs_finishing_at_once_schedule_one_event(backend: ArqRedis) -> None:
    await runs.begin(backend, "r1", tenant="team-a", priority="bulk", callback=HOOK)
    ids = [f"j{i}" for i in range(12)]
    for job_id in ids:
        await enqueue(backend, job_id)
    assert await runs.seal(backend, "r1") is False
    await asyncio.gather(
        *(finish(backend, result(j, "failed" if j == "j3" else "succeeded"), None,
                 settings=SETTINGS) for j in ids)
    )  # fmt: skip
    assert await event_jobs(backend) == ["cb-run:r1"]
    delivery = await deliveries.load(backend, "cb-run:r1")
    assert delivery is not None
    assert delivery.job_id == "run:r1" and delivery.url == HOOK["url"]
    assert delivery.headers == HOOK["headers"]
    body = json.loads(delivery.body)
    assert body["type"] == "batch.completed" and body["status"] == "completed"
    assert (body["total"], body["succeeded"], body["failed"], body["cancelled"]) == (12, 11, 1, 0)
    assert body["run"] == "r1" and body["tenant"] == "team-a" and body["ended_at"] is not None


async def test_a_cancelled_run_ends_with_batch_cancelled(backend: ArqRedis) -> None:
    await runs.begin(backend, "r1", tenant=None, priority="bulk", callback=HOOK)
    for i in range(3):
        await enqueue(backend, f"j{i}")
    await runs.seal(backend, "r1")
    await finish(backend, result("j0"), None, settings=SETTINGS)
    assert await runs.mark_cancelling(backend, "r1") is False  # two jobs are left
    assert await runs.record_finishes(backend, "r1", ["j1", "j2", "j1"], "cancelled") is True
    assert await runs.mark_cancelling(backend, "r1") is False  # it has ended
    record = await runs.read_run(backend, "r1")
    assert record is not None and (record.succeeded, record.cancelled) == (1, 2)


async def test_the_event_goes_out_as_cancelled_from_the_finish_path(backend: ArqRedis) -> None:
    await runs.begin(backend, "r1", tenant=None, priority="bulk", callback=HOOK)
    await enqueue(backend, "j0")
    await runs.seal(backend, "r1")
    await runs.mark_cancelling(backend, "r1")
    await finish(backend, result("j0", "failed"), None, settings=SETTINGS)
    delivery = await deliveries.load(backend, "cb-run:r1")
    assert delivery is not None
    assert json.loads(delivery.body)["type"] == "batch.cancelled"


async def test_a_run_without_a_callback_ends_quietly(backend: ArqRedis) -> None:
    await enqueue(backend, "j0")
    await runs.seal(backend, "r1")
    await finish(backend, result("j0"), None, settings=SETTINGS)
    record = await runs.read_run(backend, "r1")
    assert record is not None and record.ended_at is not None
    assert await event_jobs(backend) == []


async def test_cancelling_a_run_announces_batch_cancelled_once(backend: ArqRedis) -> None:
    from mimoq.producer.cancel import cancel_jobs_of_run

    await runs.begin(backend, "r1", tenant="team-a", priority="bulk", callback=HOOK)
    for i in range(5):
        await enqueue(backend, f"j{i}")
    await runs.seal(backend, "r1")
    await finish(backend, result("j0"), None, settings=SETTINGS)
    answers = await cancel_jobs_of_run(backend, "r1", settings=SETTINGS)
    assert sorted(a.id for a in answers) == ["j1", "j2", "j3", "j4"]
    assert await event_jobs(backend) == ["cb-run:r1"]
    delivery = await deliveries.load(backend, "cb-run:r1")
    assert delivery is not None
    body = json.loads(delivery.body)
    assert (body["type"], body["status"]) == ("batch.cancelled", "cancelled")
    assert (body["total"], body["succeeded"], body["cancelled"]) == (5, 1, 4)


async def test_cancelling_a_run_never_sealed_seals_and_may_end_it(backend: ArqRedis) -> None:
    await enqueue(backend, "j0")  # a foreign producer's run: never sealed
    assert await runs.record_finish(backend, "r1", "j0", "succeeded") is False
    assert await runs.mark_cancelling(backend, "r1") is True  # nothing left: it ends now
    record = await runs.read_run(backend, "r1")
    assert record is not None and record.sealed and record.cancel_requested
    assert record.ended_at is not None
