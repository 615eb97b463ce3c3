"""Tracing off (no OTEL_*): no spans, yet the job field still travels to the callback, and a
malformed one is refused with a clear error wherever it comes from."""

from __future__ import annotations

import asyncio
import json

import pytest
from arq.connections import ArqRedis

from mimoq.core import tracing, wire
from mimoq.core.errors import InvalidRequestError
from mimoq.producer.client import Producer
from tests.support.receiver import Receiver

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.usefixtures("worker")]

FOREIGN = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_off_the_jobs_traceparent_reaches_its_callback_unchanged(
    producer: Producer, receiver: Receiver, redis: ArqRedis
) -> None:
    assert not tracing.is_on()
    job = {"kind": "speech", "input": "Pass it on.", "traceparent": FOREIGN,
           "callback": {"url": receiver.url("/hook")}}  # fmt: skip
    enqueued = await producer.enqueue(job)
    assert (await producer.wait(enqueued.job_id, timeout_s=60)).status == "succeeded"
    [request] = await asyncio.to_thread(receiver.wait_for, 1, 30.0)
    assert request.headers["traceparent"] == FOREIGN


async def test_off_a_job_without_traceparent_sends_none(
    producer: Producer, receiver: Receiver
) -> None:
    enqueued = await producer.enqueue({"kind": "speech", "input": "Nothing to pass.",
                                       "callback": {"url": receiver.url("/hook")}})  # fmt: skip
    assert (await producer.wait(enqueued.job_id, timeout_s=60)).status == "succeeded"
    [request] = await asyncio.to_thread(receiver.wait_for, 1, 30.0)
    assert "traceparent" not in request.headers


async def test_the_producer_refuses_a_malformed_traceparent(producer: Producer) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        await producer.enqueue({"kind": "speech", "input": "x", "traceparent": "garbage"})
    assert caught.value.param == "traceparent"


async def test_the_worker_fails_a_foreign_job_with_a_malformed_traceparent_and_says_why(
    redis: ArqRedis, producer: Producer, receiver: Receiver
) -> None:
    script = redis.register_script(wire.enqueue_script())
    job = {"kind": "speech", "input": "x", "traceparent": "00-XYZ-01",
           "callback": {"url": receiver.url("/hook")}}  # fmt: skip
    assert await script(keys=wire.enqueue_keys("bad-tp"), args=["bad-tp", json.dumps(job)])
    result = await producer.wait("bad-tp", timeout_s=60)
    assert result.status == "failed" and result.error is not None
    assert result.error["type"] == "invalid_request_error"
    assert "traceparent must be a W3C traceparent" in str(result.error["message"])
    [request] = await asyncio.to_thread(receiver.wait_for, 1, 30.0)  # its failure callback
    assert request.json()["job_id"] == "bad-tp"
    assert "traceparent" not in request.headers


async def stored_traceparent(redis: ArqRedis, job_id: str) -> str | None:
    """The traceparent in the queued arq job (what a worker will read)."""
    raw = await redis.get(wire.job_key(job_id))
    assert raw is not None
    job = json.loads(raw)["k"]["job"]
    return job.get("traceparent")


async def test_off_a_callers_context_still_reaches_the_job(
    redis: ArqRedis, producer: Producer
) -> None:
    """`mimoq serve` makes the caller's traceparent header current; an application that
    traces with OpenTelemetry has its own span current. Off, the job carries either.
    (Deferred an hour: the worker running for this module leaves them queued.)"""
    with tracing.continued_from(FOREIGN):
        enqueued = await producer.enqueue(
            {"kind": "speech", "input": "x", "id": "ctx-1"}, defer_s=3600
        )
    assert await stored_traceparent(redis, enqueued.job_id) == FOREIGN
    with tracing.continued_from("00-not-a-traceparent-01"):  # malformed: ignored, as W3C says
        await producer.enqueue({"kind": "speech", "input": "x", "id": "ctx-2"}, defer_s=3600)
    assert await stored_traceparent(redis, "ctx-2") is None
    await producer.enqueue({"kind": "speech", "input": "x", "id": "ctx-3"}, defer_s=3600)
    assert await stored_traceparent(redis, "ctx-3") is None
