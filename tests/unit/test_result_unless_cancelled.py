"""The worker's result write and cancel.lua are atomic with each other (docs/cancel.md): a
job recorded first is answered ``already_finished``; a job whose cancel came first (it
answered in flight) is not recorded as succeeded — the write is refused and the caller
records it as cancelled."""

from __future__ import annotations

import asyncio
import json
import time

from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.core.jobs import JobResult
from mimoq.core.results import read_result, write_result_unless_cancelled
from mimoq.core.settings import Settings
from mimoq.producer.cancel import CancelStatus, cancel_jobs


def succeeded(job_id: str) -> JobResult:
    return JobResult(id=job_id, kind="speech", status="succeeded", finished_at=time.time())


async def running_and_granted(redis: ArqRedis, job_id: str) -> None:
    """What a worker holding ``job_id`` leaves in Redis once its MiMo call was granted."""
    envelope = {"t": 1, "f": "speech", "a": [], "k": {"job": {"kind": "speech"}}, "et": 1}
    await redis.set(wire.job_key(job_id), json.dumps(envelope), ex=600)
    await redis.set(wire.in_progress_key(job_id), b"1", ex=600)
    await redis.set(wire.cancel_key(job_id), "granted", ex=600)


async def test_a_result_written_first_makes_the_cancel_answer_already_finished(
    backend: ArqRedis,
) -> None:
    await running_and_granted(backend, "first")
    wrote = await write_result_unless_cancelled(backend, succeeded("first"), ttl_s=60)
    assert wrote is not None
    written, text = wrote
    assert written.status == "succeeded"
    assert await backend.get(wire.result_key("first")) == text.encode()  # the text it wrote
    [answer] = await cancel_jobs(backend, ["first"], settings=Settings())
    assert answer.status is CancelStatus.already_finished and answer.job_status == "succeeded"
    recorded = await read_result(backend, "first")
    assert recorded is not None and recorded.status == "succeeded"


async def test_a_cancel_first_refuses_the_write_and_publishes_nothing(
    backend: ArqRedis,
) -> None:
    await running_and_granted(backend, "late")
    [answer] = await cancel_jobs(backend, ["late"], settings=Settings())
    assert answer.status is CancelStatus.cancelled and answer.in_flight
    pubsub = backend.pubsub()
    await pubsub.subscribe(wire.done_channel("late"))
    try:
        written = await write_result_unless_cancelled(backend, succeeded("late"), ttl_s=60)
        assert written is None
        assert await backend.get(wire.result_key("late")) is None
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        assert message is None  # no "succeeded" news for a job that will end cancelled
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_the_write_loads_its_script_after_a_flush(backend: ArqRedis) -> None:
    await backend.script_flush()
    written = await write_result_unless_cancelled(backend, succeeded("fresh"), ttl_s=60)
    assert written is not None
    recorded = await read_result(backend, "fresh")
    assert recorded is not None and recorded.status == "succeeded"
    assert await backend.ttl(wire.result_key("fresh")) > 0


async def test_many_writes_racing_many_cancels_agree_with_their_answers(
    backend: ArqRedis,
) -> None:
    """Whichever comes first, the record and the cancel's answer say the same thing."""
    ids = [f"race-{i}" for i in range(40)]
    for job_id in ids:
        await running_and_granted(backend, job_id)

    async def write(job_id: str) -> JobResult | None:
        return await write_result_unless_cancelled(backend, succeeded(job_id), ttl_s=60)

    writes = asyncio.gather(*(write(j) for j in ids))
    answers = await cancel_jobs(backend, ids, settings=Settings())
    written = await writes
    for job_id, answer, wrote in zip(ids, answers, written, strict=True):
        recorded = await backend.get(wire.result_key(job_id))
        if answer.status is CancelStatus.already_finished:
            assert wrote is not None and recorded is not None
        else:
            assert answer.in_flight and wrote is None and recorded is None
