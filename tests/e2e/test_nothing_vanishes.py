"""A result that cannot be encoded is recorded as a failure, never lost (real worker)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from arq.connections import ArqRedis
from redis.exceptions import ResponseError
from standardwebhooks.webhooks import Webhook

from mimoq.core import wire
from mimoq.core.jobs import AudioOutput, JobResult
from mimoq.core.results import read_result, write_result_safely
from mimoq.core.settings import Settings
from mimoq.producer.client import Producer
from mimoq.worker.arq_worker import MimoqWorker
from tests.e2e.conftest import WEBHOOK_SECRET, running_worker
from tests.support.receiver import Receiver

pytestmark = [pytest.mark.redis]

# JSON text as a foreign producer writes it: the escape decodes to a lone surrogate.
_LONE = "\\udc00"


async def test_a_lone_surrogate_in_raw_metadata_gives_a_failure_result_and_callback(
    redis: ArqRedis, producer: Producer, worker: MimoqWorker, receiver: Receiver
) -> None:
    job_text = (
        '{"kind":"speech","input":"Hello.","metadata":{"who":"a'
        + _LONE
        + 'b","n":[1,"'
        + _LONE
        + '"]},"callback":{"url":"'
        + receiver.url("/hook")
        + '"}}'
    )
    envelope = '{"t":null,"f":"speech","a":[],"k":{"job":' + job_text + '},"et":1}'
    await redis.set(wire.job_key("raw-1"), envelope)
    await redis.zadd(wire.QUEUE_NAME, {"raw-1": int(time.time() * 1000)})
    # A well-formed job in the same run: the worker keeps going.
    fine = await producer.enqueue({"kind": "speech", "input": "Still fine."})

    result = await producer.wait("raw-1", timeout_s=20)
    assert result.status == "failed"
    assert result.error is not None and result.error["type"] == "invalid_request_error"
    assert "metadata" in str(result.error["message"])
    assert result.error["note"] == "text that was not valid Unicode was replaced by U+FFFD"
    assert result.metadata == {"who": "a\ufffdb", "n": [1, "\ufffd"]}
    [request] = await asyncio.to_thread(receiver.wait_for, 1, 10.0)
    payload = Webhook(WEBHOOK_SECRET).verify(request.body, request.headers)
    assert payload["type"] == "job.failed" and payload["metadata"]["who"] == "a\ufffdb"
    assert (await producer.wait(fine.job_id, timeout_s=20)).status == "succeeded"


async def test_the_enqueue_script_answers_a_lone_surrogate_plainly(
    redis: ArqRedis, producer: Producer, settings: Settings
) -> None:
    script = redis.register_script(wire.enqueue_script())
    job_text = '{"kind":"speech","input":"Hi.","metadata":"' + _LONE + '"}'
    try:
        added = await script(keys=wire.enqueue_keys("raw-2"), args=["raw-2", job_text])
    except ResponseError as exc:  # refused at the door is fine, if it says why plainly
        assert str(exc).startswith("invalid_request_error:")
        return
    assert added == 1  # accepted: then the worker must record a failure, not lose it
    async with running_worker(settings):
        result = await producer.wait("raw-2", timeout_s=20)
    assert result.status == "failed" and "metadata" in str((result.error or {})["message"])


async def test_an_unencodable_success_is_recorded_as_a_failure_keeping_the_output(
    redis: ArqRedis,
) -> None:
    output = AudioOutput(
        key="a.wav",
        path="/data/a.wav",
        format="wav",
        bytes=44,
        duration_s=0.0,
        sample_rate=24_000,
        channels=1,
        bits_per_sample=16,
    )
    produced = JobResult(
        id="s-1",
        kind="speech",
        status="succeeded",
        output=output,
        text="x\ud800y",
        metadata={"k": "ok"},
        finished_at=1.0,
    )

    written = await write_result_safely(redis, produced, ttl_s=60)

    stored = await read_result(redis, "s-1")
    assert stored == written
    assert stored is not None and stored.status == "failed"
    assert stored.error is not None and stored.error["type"] == "internal_error"
    assert "not valid Unicode" in str(stored.error["message"])
    assert stored.output == output and stored.text == "x\ufffdy"
    assert json.loads(await redis.get(wire.result_key("s-1")))["metadata"] == {"k": "ok"}
