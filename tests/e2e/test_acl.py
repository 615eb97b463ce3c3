"""The ACL users of ``mimoq acl`` on a real redis-server: producers enqueue and read, no more."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from arq.connections import ArqRedis
from redis.exceptions import NoPermissionError, ResponseError

from mimoq.cli.acl import run as acl_command
from mimoq.core import runs, wire
from mimoq.core.acl_users import users
from mimoq.core.errors import JobCancelled, PaymentRequiredError
from mimoq.core.settings import Settings
from mimoq.core.tenant_limits import TenantLimits
from mimoq.core.usage_windows import usage_report
from mimoq.producer.cancel import cancel_tenant
from mimoq.producer.client import Producer
from mimoq.sim.sim_server import RunningSim
from mimoq.worker import cancel_watch
from mimoq.worker.accounts.breaker import Breaker
from mimoq.worker.cancel_watch import RunningJobs
from mimoq.worker.run_progress import read_progress
from tests.conftest import RedisServer, start_redis_server
from tests.e2e.conftest import e2e_settings, running_worker
from tests.support.polling import eventually
from tests.support.receiver import Receiver

pytestmark = [pytest.mark.redis, pytest.mark.slow]

PRODUCER_PW = "producer-pw-9f8e"
WORKER_PW = "worker-pw-1a2b"


@pytest.fixture
def acl_server() -> Iterator[RedisServer]:
    """A private redis-server with the two users (the default user keeps admin rights)."""
    server = start_redis_server()
    import redis as sync_redis

    admin = sync_redis.Redis(port=server.port)
    producer, worker = users()
    admin.execute_command("ACL", "SETUSER", producer.name, *producer.rules, ">" + PRODUCER_PW)
    admin.execute_command("ACL", "SETUSER", worker.name, *worker.rules, ">" + WORKER_PW)
    admin.close()
    yield server
    server.stop()


def _url(server: RedisServer, user: str, password: str) -> str:
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/0"


async def test_producer_enqueues_and_reads_the_worker_runs_it_and_nothing_else_is_allowed(
    acl_server: RedisServer, sim: RunningSim, tmp_path: Path, receiver: Receiver
) -> None:
    producer_url = _url(acl_server, "mimoq-producer", PRODUCER_PW)
    worker_url = _url(acl_server, "mimoq-worker", WORKER_PW)
    redis = ArqRedis.from_url(producer_url)
    worker_settings = e2e_settings(acl_server, sim, tmp_path / "data", redis_url=worker_url)
    producer = Producer(redis, worker_settings.updated(redis_url=producer_url))
    try:
        jobs = [
            await producer.enqueue(
                {"kind": "speech", "input": "Allowed.", "callback": {"url": receiver.url("/h")}}
            ),
            await producer.enqueue({"kind": "speech", "input": "Bulk.", "priority": "bulk"}),
            # a job of a run: the script counts it in the run's record, as this user
            await producer.enqueue({"kind": "speech", "input": "Run.", "run": "nightly"}),
        ]
        await runs.seal(redis, "nightly")
        # a run still waiting: its ETA reads the limiter's grant log and latency, as this user
        waiting = await read_progress(redis, producer.settings, "nightly")
        assert waiting is not None and not waiting.ended and waiting.estimate.eta_s is not None
        # the producer may cancel (docs/cancel.md): it cannot write the record itself, so
        # the job goes to the queue's head and a worker records it, without calling MiMo
        doomed = await producer.enqueue(
            {"kind": "speech", "input": "Doomed by acl.", "callback": {"url": receiver.url("/h")}}
        )
        assert (await producer.cancel(doomed.job_id)).status.value == "cancelled"
        assert await redis.get(wire.cancel_key(doomed.job_id)) == b"cancelled"
        # and a tenant's jobs: a deferred one through the tenant's index (docs/cancel.md)
        later = await producer.enqueue(
            {"kind": "speech", "input": "Later by acl.", "tenant": "acl-t"}, defer_s=60
        )
        answers = await cancel_tenant(redis, "acl-t", settings=producer.settings)
        assert [(a.id, a.status.value) for a in answers] == [(later.job_id, "cancelled")]
        async with running_worker(worker_settings):
            results = [await producer.wait(j.job_id, timeout_s=30) for j in jobs]
            cancelled = await producer.wait(doomed.job_id, timeout_s=30)
            assert (await producer.wait(later.job_id, timeout_s=30)).status == "cancelled"
            await asyncio.to_thread(receiver.wait_for, 2, 10.0)  # worker wrote the deliveries
        assert [r.status for r in results] == ["succeeded", "succeeded", "succeeded"]
        assert cancelled.status == "cancelled"
        assert sim.state.calls_matching("Doomed by acl") == []
        assert sorted(r.json()["type"] for r in receiver.requests) == [
            "job.cancelled", "job.succeeded",
        ]  # fmt: skip
        # the producer reads its run's progress and ETA (as `mimoq batch status` does)
        progress = await read_progress(redis, producer.settings, "nightly")
        assert progress is not None and progress.ended and progress.record.succeeded == 1
        assert (await producer.status(jobs[0].job_id)).status.value == "succeeded"
        # and the usage totals (GET /v1/usage, `mimoq usage`), which only workers write
        usage = await usage_report(redis, TenantLimits(), since_s=3600, now=time.time())
        assert sum(r["requests"] for r in usage["usage"]) == len(jobs)

        job_id = jobs[0].job_id
        forbidden = [
            ("SET", wire.result_key(job_id), "{}"),  # results are the workers'
            ("SET", "mimoq:delivery:cb-x", "{}"),  # so are deliveries (forged callbacks)
            ("SET", "mimoq:dead:cb-x", "{}"),
            ("ZADD", "mimoq:dead", "1", "cb-x"),
            ("SET", "mimoq:limit:x", "1"),
            ("HINCRBYFLOAT", wire.usage_key(3600, 0), "alpha|mimo-v2.5-tts|requests", "-5"),
            ("SET", wire.tenant_held_key("rival"), "{}"),  # holding someone else's tenant
            ("HSET", wire.INFLIGHT_KEY, "x", "w"),
            ("SET", "mimoq:worker:fake", "{}"),
            ("DEL", wire.job_key("someone-elses")),
            ("ZREM", wire.QUEUE_NAME, "someone-elses"),
            ("FLUSHALL",),
            ("KEYS", "*"),
            ("CONFIG", "GET", "*"),
            ("ACL", "LIST"),
            # a script runs with the caller's permissions: no way around the rules
            ("EVAL", "return redis.call('SET', KEYS[1], 'x')", "1", wire.result_key("y")),
            ("EVAL", "return redis.call('SET', 'mimoq:delivery:cb-y', 'x')", "0"),
            ("EVAL", "return redis.call('FLUSHALL')", "0"),
        ]
        for command in forbidden:
            with pytest.raises((NoPermissionError, ResponseError)) as refused:
                await redis.execute_command(*command)
            text = str(refused.value)
            assert "NOPERM" in text or "no permissions" in text or "can't " in text, command
        assert await redis.get(wire.result_key(job_id)) is not None  # reading is allowed
        admin = ArqRedis.from_url(acl_server.url)
        written = ("mimoq:delivery:cb-x", "mimoq:delivery:cb-y", wire.result_key("y"), "mimoq:dead")
        assert await admin.exists(*written) == 0
        assert await admin.exists(wire.job_key("someone-elses")) == 0
        assert await admin.dbsize() > 0  # FLUSHALL was refused
        await admin.aclose()
    finally:
        await redis.aclose()


def test_mimoq_acl_prints_both_users_without_passwords(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    assert acl_command(argparse.Namespace(prefix="q1-"), Settings()) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("ACL SETUSER")]
    assert [line.split()[2] for line in lines] == ["q1-producer", "q1-worker"]
    assert "'%R~mimoq:result:*'" in lines[0] and "+set" in lines[0] and "-@all" in lines[0]
    assert ">" not in "".join(lines)  # no password is made up or printed


async def test_the_worker_user_hears_cancels_and_the_paused_accounts_changes(
    acl_server: RedisServer,
) -> None:
    """A worker under its least-privilege user subscribes to both channels it needs: a
    cancel published by a producer stops the job it runs, and its breaker's trip (its own
    script's PUBLISH) reaches its copy of the paused accounts."""
    worker = ArqRedis.from_url(_url(acl_server, "mimoq-worker", WORKER_PW))
    producer = ArqRedis.from_url(_url(acl_server, "mimoq-producer", PRODUCER_PW))
    admin = ArqRedis.from_url(acl_server.url)
    running = RunningJobs()
    breaker = Breaker(worker, probe_base_s=30, probe_max_s=300, pause_max_s=3600, trip_429s=5)
    watchers = [
        asyncio.create_task(cancel_watch.watch(worker, running)),
        asyncio.create_task(breaker.paused_view.watch()),
    ]
    try:
        started = asyncio.Event()

        async def call() -> None:
            started.set()
            await asyncio.Event().wait()  # a MiMo call that would never end by itself

        job = asyncio.create_task(running.run("acl-job", call()))
        await started.wait()

        async def subscribed() -> bool:
            counts = dict(await admin.pubsub_numsub(wire.CANCEL_CHANNEL))
            return counts.get(wire.CANCEL_CHANNEL.encode(), 0) == 1

        await eventually(subscribed, what="the worker's cancel subscription")
        await eventually(lambda: breaker.paused_view.known() is not None, what="the paused set")
        await producer.publish(wire.CANCEL_CHANNEL, "acl-job")
        with pytest.raises(JobCancelled):
            await job
        assert await breaker.trip("acl-acct", PaymentRequiredError("out of funds", status=402))
        await eventually(lambda: breaker.paused_view.known() == {"acl-acct"}, what="the trip")
    finally:
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        for client in (worker, producer, admin):
            await client.aclose()
