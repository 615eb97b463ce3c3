"""The worker's result write and cancel.lua are atomic with each other (docs/cancel.md): a
job recorded first is answered ``already_finished``; a job whose cancel came first (it
answered in flight) is not recorded as succeeded — the write is refused and the caller
records it as cancelled."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from arq.connections import ArqRedis
from redis.exceptions import ResponseError

from mimoq.core import wire
from mimoq.core.deliveries import HandOver, hand_over, load
from mimoq.core.finish import build_delivery, callback_body
from mimoq.core.jobs import Callback, JobResult
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


def _hand_over(seen: list[HandOver]) -> Callable[[JobResult], HandOver]:
    """The callback's hand-over made of the record as written (what finish.py passes)."""

    def make(written: JobResult) -> HandOver:
        callback = Callback(url="https://hooks.example.com/done")
        seen.append(hand_over(build_delivery(written, callback), defer_s=60.0))
        return seen[-1]

    return make


async def test_the_callback_is_handed_over_on_the_records_round_trip(backend: ArqRedis) -> None:
    async def reads() -> int | None:
        """Round trips and script calls so far, as one number each a thousand apart."""
        try:
            trips = int((await backend.info("stats"))["total_reads_processed"])
            calls = (await backend.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0)
        except ResponseError:  # fakeredis has no INFO
            return None
        return trips + 1000 * int(calls)

    async def reads_of(job_id: str, seen: list[HandOver] | None) -> int | None:
        await running_and_granted(backend, job_id)
        before = await reads()
        handing = _hand_over(seen) if seen is not None else None
        wrote = await write_result_unless_cancelled(
            backend, succeeded(job_id), ttl_s=60, hand_over=handing
        )
        assert wrote is not None
        now = await reads()
        return None if before is None or now is None else now - before

    # the scripts loaded and the connections made first
    await reads_of("warm", [])
    seen: list[HandOver] = []
    plain, hooked = await reads_of("plain", None), await reads_of("hooked", seen)
    assert seen[0].queued
    # the hand-over adds no round trip and no script call to the record's
    assert hooked == plain
    delivery = await load(backend, wire.callback_job_id("hooked"))
    assert delivery is not None
    recorded = await read_result(backend, "hooked")
    assert recorded is not None and delivery.body == callback_body(recorded, delivery.delivery_id)
    assert await backend.zscore(wire.QUEUE_NAME, wire.callback_job_id("hooked")) is not None


async def test_a_cancel_first_hands_over_no_callback_of_the_refused_record(
    backend: ArqRedis,
) -> None:
    await running_and_granted(backend, "hooked-late")
    await cancel_jobs(backend, ["hooked-late"], settings=Settings())
    seen: list[HandOver] = []
    wrote = await write_result_unless_cancelled(
        backend, succeeded("hooked-late"), ttl_s=60, hand_over=_hand_over(seen)
    )
    assert wrote is None and not seen[0].queued
    # nothing of the "succeeded" callback: the cancelled record hands its own over
    delivery_id = wire.callback_job_id("hooked-late")
    assert await load(backend, delivery_id) is None
    assert await backend.exists(wire.job_key(delivery_id)) == 0


async def test_a_pending_delivery_is_not_handed_over_twice(backend: ArqRedis) -> None:
    await running_and_granted(backend, "hooked-twice")
    first: list[HandOver] = []
    await write_result_unless_cancelled(
        backend, succeeded("hooked-twice"), ttl_s=60, hand_over=_hand_over(first)
    )
    again: list[HandOver] = []
    await write_result_unless_cancelled(
        backend, succeeded("hooked-twice"), ttl_s=60, hand_over=_hand_over(again)
    )
    assert first[0].queued and not again[0].queued
