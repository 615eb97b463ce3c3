"""A finished job's callback: its first attempt is made in the job's own run (issue #22).

Real worker, real redis-server, the simulator as MiMo and a loopback receiver. What is
checked is what a user and an operator see: the callbacks that arrive (signed, one id),
the result record's callback state, the delivery record's history, what is left in arq's
queue, and that a worker killed during the attempt loses nothing.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis

from mimoq.core import arq_compat, deliveries, finish, scripts, wire
from mimoq.core.jobs import Callback
from mimoq.core.results import read_result
from mimoq.core.settings import Settings
from mimoq.producer.client import Producer
from mimoq.sim.faults import Fault
from mimoq.sim.sim_server import RunningSim
from mimoq.worker import callback_delivery
from tests.callbacks.conftest import make_result, store_result
from tests.conftest import RedisServer
from tests.e2e.conftest import e2e_settings, running_worker
from tests.ops.test_shutdown import spawn  # noqa: F401  (the worker-process fixture)
from tests.support.polling import eventually
from tests.support.receiver import Receiver, Response

pytestmark = [pytest.mark.redis, pytest.mark.slow]


async def _delivered(redis: ArqRedis, job_id: str) -> Any:
    result = await read_result(redis, job_id)
    if result is None or result.callback.status.value != "delivered":
        return None
    return result


async def test_the_first_attempt_is_made_in_the_jobs_run_and_leaves_nothing_queued(
    settings: Settings, redis: ArqRedis, receiver: Receiver
) -> None:
    # Three tenants and both lanes at once, as the service runs them.
    producer = Producer(redis, settings)
    jobs = [
        await producer.enqueue(
            {
                "kind": "speech",
                "input": f"Hello {i}.",
                "tenant": f"t-{i % 3}",
                "priority": "interactive" if i % 2 else "bulk",
                "callback": {"url": receiver.url(f"/hook/{i}")},
            }
        )
        for i in range(6)
    ]
    async with running_worker(settings) as worker:
        for job in jobs:
            await eventually(lambda j=job: _delivered(redis, j.job_id), 60, "a delivered callback")
        await eventually(lambda: worker.jobs_complete >= len(jobs) or None, 30, "the job runs")
        # arq ran the jobs and nothing else: no delivery job was ever run
        assert worker.jobs_complete == len(jobs)
        assert worker.jobs_retried == 0

    sent = receiver.requests
    assert sorted(r.json()["job_id"] for r in sent) == sorted(j.job_id for j in jobs)
    assert sorted(r.headers["webhook-id"] for r in sent) == sorted(
        wire.callback_job_id(j.job_id) for j in jobs
    )
    for job in jobs:
        result = await _delivered(redis, job.job_id)
        assert result.callback.attempts == 1
        delivery_id = wire.callback_job_id(job.job_id)
        record = await deliveries.load(redis, delivery_id)
        assert record is not None
        assert [a.outcome for a in record.history] == ["delivered"]
        # the backstop job is gone: out of the queue, its key deleted, never tried by arq
        assert await redis.zscore(wire.QUEUE_NAME, delivery_id) is None
        assert await redis.exists(wire.job_key(delivery_id)) == 0
        assert await redis.exists(arq_compat.RETRY_PREFIX + delivery_id) == 0


async def test_a_failed_inline_attempt_becomes_the_delivery_jobs_second_try(
    redis_server: RedisServer, sim: RunningSim, tmp_path: Path, redis: ArqRedis,
    receiver: Receiver,
) -> None:  # fmt: skip
    settings = e2e_settings(
        redis_server, sim, tmp_path / "data",
        callbacks={"schedule_s": "0,0.3,0.3", "jitter": 0.0},
    )  # fmt: skip
    receiver.respond(Response(503), Response(503))  # then 200
    producer = Producer(redis, settings)
    job = await producer.enqueue(
        {"kind": "speech", "input": "Retry me.", "callback": {"url": receiver.url("/hook")}}
    )
    async with running_worker(settings):
        result = await eventually(lambda: _delivered(redis, job.job_id), 60, "delivered")

    first, second, third = receiver.requests
    assert {r.headers["webhook-id"] for r in (first, second, third)} == {
        result.callback.delivery_id
    }
    assert first.body == second.body == third.body
    # the schedule after the inline attempt is the configured one: try 2 after 0.3 s, try 3
    # after 0.3 s more (a delivery job restarting at try 1 would wait 0.3 s and then give up
    # one try early, or, off by one the other way, come back at once)
    assert second.received_at - first.received_at >= 0.3
    assert third.received_at - second.received_at >= 0.3
    assert result.callback.attempts == 3
    record = await deliveries.load(redis, result.callback.delivery_id or "")
    assert record is not None
    assert [a.outcome for a in record.history] == ["retry", "retry", "delivered"]
    assert await redis.zscore(wire.QUEUE_NAME, result.callback.delivery_id or "") is None


async def test_an_inline_attempt_that_dies_with_its_worker_is_made_again_soon(
    redis: ArqRedis, spawn: Any, sim: RunningSim, redis_server: RedisServer,  # noqa: F811
    tmp_path: Path, receiver: Receiver,
) -> None:  # fmt: skip
    producer = Producer(redis, e2e_settings(redis_server, sim, tmp_path / "data"))
    env = {
        "MIMOQ_HEARTBEAT_INTERVAL_S": "0.5",
        "MIMOQ_LIMITS_ENABLED": "false",
        # a backstop 2 x 20 + 30 = 70 s out: what this test waits is far below it
        "MIMOQ_CALLBACK_TIMEOUT_S": "20",
    }
    unstick = threading.Event()
    receiver.respond(Response(hold=unstick))  # the first request: no answer while the victim lives
    victim = spawn(**env)
    job = await producer.enqueue(
        {"kind": "speech", "input": "Die in the callback.", "callback": {"url": receiver.url("/h")}}
    )
    delivery_id = wire.callback_job_id(job.job_id)
    await asyncio.to_thread(receiver.wait_for, 1, 60)
    # the backstop is queued, due after the attempt's bound, before the attempt was made
    score = await redis.zscore(wire.QUEUE_NAME, delivery_id)
    assert score is not None
    assert score / 1000 - time.time() > finish.inline_backstop_s(20.0) - 15

    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(10)
    killed = time.monotonic()
    spawn(**env)
    result = await eventually(lambda: _delivered(redis, job.job_id), 40, "the callback again")
    again_s = time.monotonic() - killed
    assert again_s < finish.inline_backstop_s(20.0) / 2
    first, second = receiver.requests[:2]
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery_id
    assert first.body == second.body
    # the dead attempt was never recorded: the one made again is the delivery's first
    assert result.callback.attempts == 1
    # and its backstop goes once it is recorded (the next round trip: a read in between
    # still finds it queued, so this waits for it rather than reads once)
    await eventually(lambda: _not_queued(redis, delivery_id), 10, "the backstop dropped")
    unstick.set()


async def _not_queued(redis: ArqRedis, job_id: str) -> bool:
    return await redis.zscore(wire.QUEUE_NAME, job_id) is None


async def test_an_error_of_ours_in_the_inline_attempt_leaves_it_to_the_delivery_job(
    redis: ArqRedis, settings: Settings, receiver: Receiver
) -> None:
    class Broken:
        async def send(self, *_: Any, **__: Any) -> Any:
            raise RuntimeError("a bug of ours")

        def build_request(self, *_: Any, **__: Any) -> None:
            return None

    job = make_result("inline-broken")
    await store_result(redis, job)
    # the delivery and its backstop as a finishing worker makes them
    delivery = finish.build_delivery(job, Callback(url=receiver.url("/hook")))
    assert await deliveries.enqueue(redis, delivery, defer_s=finish.inline_backstop_s(5.0))
    score = await redis.zscore(wire.QUEUE_NAME, delivery.delivery_id)
    ctx = {"settings": settings, "redis": redis, "callback_client": Broken()}
    await callback_delivery.deliver_inline(ctx, delivery)

    assert receiver.requests == []
    # the backstop job is as it was: queued at its time, its key kept, no try counted
    assert await redis.zscore(wire.QUEUE_NAME, delivery.delivery_id) == score
    assert await redis.exists(wire.job_key(delivery.delivery_id)) == 1
    assert await redis.exists(arq_compat.RETRY_PREFIX + delivery.delivery_id) == 0


async def test_a_delivered_inline_attempt_is_recorded_in_one_round_trip(
    redis: ArqRedis, settings: Settings, receiver: Receiver
) -> None:
    """The delivery record, the result record's callback state and the backstop's removal
    go together: they were three round trips for every callback delivered in its job's run."""
    job = make_result("inline-one-trip")
    await store_result(redis, job)
    record = wire.dumps(job.model_dump(mode="json"))  # the text the finish wrote
    delivery = finish.build_delivery(job, Callback(url=receiver.url("/hook")))
    assert await deliveries.enqueue(redis, delivery, defer_s=finish.inline_backstop_s(5.0))
    ctx = {"settings": settings, "redis": redis}
    await callback_delivery.open_callback_client(ctx)
    # (a worker loads each script once: not part of the count)
    await redis.script_load(scripts.named("result_callback_swap").text)
    await redis.config_resetstat()
    try:
        await callback_delivery.deliver_inline(ctx, delivery, record=record)
    finally:
        await callback_delivery.close_callback_client(ctx)
    # this INFO is one read; the writes were 3 reads before (a pipeline split by the
    # kernel could read as 2)
    assert (await redis.info("stats"))["total_reads_processed"] < 4
    assert len(receiver.requests) == 1
    result = await _delivered(redis, job.id)
    assert result is not None and result.callback.attempts == 1
    stored = await deliveries.load(redis, delivery.delivery_id)
    assert stored is not None and [a.outcome for a in stored.history] == ["delivered"]
    assert await _not_queued(redis, delivery.delivery_id)
    assert await redis.exists(wire.job_key(delivery.delivery_id)) == 0


async def test_a_run_without_time_left_for_the_attempt_hands_it_to_the_delivery_job(
    redis_server: RedisServer, sim: RunningSim, tmp_path: Path, redis: ArqRedis,
    receiver: Receiver,
) -> None:  # fmt: skip
    # 2 x 5 s + the writes' 10 s do not fit in a 15 s job timeout: arq would cut the run off
    settings = e2e_settings(
        redis_server, sim, tmp_path / "data",
        worker={"poll_delay_s": 0.01, "job_timeout_s": 15}, callbacks={"timeout_s": 5},
    )  # fmt: skip
    assert finish.inline_bound_s(settings.callbacks.timeout_s) > settings.worker.job_timeout_s
    producer = Producer(redis, settings)
    job = await producer.enqueue(
        {"kind": "speech", "input": "No time.", "callback": {"url": receiver.url("/hook")}}
    )
    async with running_worker(settings) as worker:
        result = await eventually(lambda: _delivered(redis, job.job_id), 60, "delivered")
        await eventually(lambda: worker.jobs_complete >= 2 or None, 30, "both runs")
        assert worker.jobs_complete == 2  # the job, then its delivery job
    assert result.callback.attempts == 1
    assert len(receiver.requests) == 1


async def test_under_load_every_callback_is_delivered_once_after_its_failures(
    redis_server: RedisServer, sim: RunningSim, tmp_path: Path, redis: ArqRedis,
    receiver: Receiver,
) -> None:  # fmt: skip
    """Two workers, three tenants, both lanes, a third of the jobs from a foreign producer
    (raw EVALSHA of the enqueue script), MiMo answering some calls 429/503, the receiver
    failing some callbacks with 503/500 and the host under a CPU hog: every callback ends
    delivered, 2xx'd exactly once, each earlier answer a recorded retry, nothing left queued."""
    settings = e2e_settings(
        redis_server, sim, tmp_path / "data",
        callbacks={"schedule_s": "0,0.1,0.2,0.4,0.8", "jitter": 0.0},
    )  # fmt: skip
    sim.state.add_fault(Fault(kind="status", status=503, times=4))
    sim.state.add_fault(Fault(kind="status", status=429, times=3))
    answers = [Response(503), Response(200), Response(500), Response(200), Response(200)] * 6
    receiver.respond(*answers)  # then 200
    producer = Producer(redis, settings)
    sha = await redis.script_load(wire.enqueue_script())
    ids: list[str] = []
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        async with running_worker(settings), running_worker(settings):
            for i in range(45):
                job = {
                    "kind": "speech", "input": f"Loaded {i}.", "tenant": f"t-{i % 3}",
                    "priority": "interactive" if i % 4 == 0 else "bulk",
                    "callback": {"url": receiver.url(f"/hook/{i}")},
                }  # fmt: skip
                if i % 3 == 0:  # a foreign producer: the raw script, any language
                    job_id = f"foreign-{i}"
                    await redis.evalsha(sha, 4, *wire.enqueue_keys(job_id), job_id, json.dumps(job))
                else:
                    job_id = (await producer.enqueue(job)).job_id
                ids.append(job_id)
            for job_id in ids:
                await eventually(lambda j=job_id: _delivered(redis, j), 120, "every callback")
    finally:
        hog.kill()
        hog.wait()

    requests = receiver.requests
    statuses = [a.status for a in answers] + [200] * max(0, len(requests) - len(answers))
    by_id: dict[str, list[int]] = {}
    for request, status in zip(requests, statuses, strict=False):
        by_id.setdefault(request.headers["webhook-id"], []).append(status)
    assert sorted(by_id) == sorted(wire.callback_job_id(j) for j in ids)
    for job_id in ids:
        delivery_id = wire.callback_job_id(job_id)
        answered = by_id[delivery_id]
        assert [s for s in answered if s == 200] == [200] and answered[-1] == 200, answered
        result = await _delivered(redis, job_id)
        assert result.status == "succeeded"
        assert result.callback.attempts == len(answered)
        record = await deliveries.load(redis, delivery_id)
        assert record is not None
        assert [a.outcome for a in record.history] == ["retry"] * (len(answered) - 1) + [
            "delivered"
        ]
        assert await redis.zscore(wire.QUEUE_NAME, delivery_id) is None
    assert sum(len(a) for a in by_id.values()) > len(ids)  # some callbacks were retried
