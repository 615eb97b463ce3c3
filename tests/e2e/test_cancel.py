"""Cancel end to end (docs/cancel.md): every state a job can be cancelled in, against a
private redis-server, the simulator (whose call log says which jobs it ever saw) and real
arq workers. "No MiMo call after the cancel returns" is checked on the simulator's side.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis
from standardwebhooks.webhooks import Webhook

from mimoq.core import wire
from mimoq.core.jobs import JobResult
from mimoq.core.settings import Settings
from mimoq.producer.cancel import CancelStatus, cancel_jobs, cancel_tenant
from mimoq.producer.client import Producer
from mimoq.sim.faults import Fault
from mimoq.sim.sim_server import RunningSim
from tests.conftest import RedisServer
from tests.e2e.conftest import WEBHOOK_SECRET, e2e_settings, running_worker
from tests.support.cli import clean_env, mimoq
from tests.support.polling import eventually
from tests.support.receiver import Receiver

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def calls(sim: RunningSim, marker: str) -> int:
    return len(sim.state.calls_matching(marker))


async def result_of(redis: ArqRedis, job_id: str) -> JobResult | None:
    raw = await redis.get(wire.result_key(job_id))
    return None if raw is None else JobResult.model_validate_json(raw)


def speech(job_id: str, **extra: Any) -> dict[str, Any]:
    # the text carries the id, so the simulator's call log tells the jobs apart
    return {"kind": "speech", "id": job_id, "input": f"say {job_id} please", **extra}


class TestAnswers:
    async def test_unknown_malformed_and_repeated_ids(self, producer: Producer) -> None:
        answers = await producer.cancel_many(["nobody-here", "bad id!", "nobody-here"])
        assert [a.to_dict()["status"] for a in answers] == ["not_found", "invalid"]
        assert "A-Z a-z 0-9" in (answers[1].error or "")

    async def test_a_finished_job_is_left_alone(
        self, producer: Producer, redis: ArqRedis, settings: Settings
    ) -> None:
        async with running_worker(settings):
            await producer.enqueue(speech("done-1"))
            done = await producer.wait("done-1", timeout_s=20)
        assert done.status == "succeeded"
        answer = await producer.cancel("done-1")
        assert answer.to_dict() == {
            "id": "done-1",
            "status": "already_finished",
            "job_status": "succeeded",
        }
        after = await result_of(redis, "done-1")
        assert after is not None and after.status == "succeeded" and after.output is not None


class TestQueued:
    """Cancelled before any worker took it: recorded at once, and never sent."""

    async def test_queued_job_is_recorded_with_one_signed_callback(
        self, producer: Producer, redis: ArqRedis, settings: Settings, sim: RunningSim,
        receiver: Receiver,
    ) -> None:  # fmt: skip
        job = speech("q-1", callback={"url": receiver.url("/hook")}, metadata={"n": 1})
        await producer.enqueue(job)
        answer = await producer.cancel("q-1")
        assert answer.status is CancelStatus.cancelled and not answer.in_flight
        result = await result_of(redis, "q-1")  # at once, before any worker runs
        assert result is not None and result.status == "cancelled"
        assert result.metadata == {"n": 1} and result.output is None
        assert (await producer.status("q-1")).status.value == "cancelled"
        assert (await producer.cancel("q-1")).status is CancelStatus.cancelled  # idempotent
        async with running_worker(settings):
            await producer.enqueue(speech("q-after"))
            await producer.wait("q-after", timeout_s=20)
            requests = await asyncio.to_thread(receiver.wait_for, 1, 10.0)
        payload = Webhook(WEBHOOK_SECRET).verify(requests[0].body, requests[0].headers)
        assert isinstance(payload, dict)
        assert payload["type"] == "job.cancelled" and payload["job_id"] == "q-1"
        assert payload["status"] == "cancelled"
        assert len(receiver.requests) == 1
        assert calls(sim, "q-1 ") == 0 and calls(sim, "q-after") == 1

    async def test_deferred_job(
        self, producer: Producer, redis: ArqRedis, settings: Settings, sim: RunningSim
    ) -> None:
        await producer.enqueue(speech("d-1"), defer_s=0.5)
        assert (await producer.cancel("d-1")).status is CancelStatus.cancelled
        async with running_worker(settings):
            await producer.enqueue(speech("d-after"), defer_s=0.6)
            await producer.wait("d-after", timeout_s=20)
        result = await result_of(redis, "d-1")
        assert result is not None and result.status == "cancelled"
        assert calls(sim, "d-1 ") == 0
        assert await redis.zscore(wire.QUEUE_NAME, "d-1") is None

    async def test_bulk_jobs_waiting_for_admission(
        self, producer: Producer, redis: ArqRedis, settings: Settings, sim: RunningSim
    ) -> None:
        ids = [f"b-{i}" for i in range(12)]
        for job_id in ids:
            await producer.enqueue(speech(job_id, priority="bulk", tenant="acme"))
        waiting = await redis.lrange(wire.wait_list_key("mimo-v2.5-tts", "acme"), 0, -1)
        assert b"b-5" in waiting  # in the tenant's wait list, not the queue
        cancelled = ids[3:9]
        answers = await producer.cancel_many(cancelled)
        assert {a.status for a in answers} == {CancelStatus.cancelled}
        async with running_worker(settings):
            for job_id in ids:
                result = await producer.wait(job_id, timeout_s=30)
                assert result.status == ("cancelled" if job_id in cancelled else "succeeded")
        assert [calls(sim, f"{j} ") for j in cancelled] == [0] * len(cancelled)
        assert all(calls(sim, f"{j} ") == 1 for j in ids if j not in cancelled)

    async def test_interactive_flood_waiting_in_its_tenant_list(
        self, producer: Producer, redis: ArqRedis, settings: Settings, sim: RunningSim
    ) -> None:
        ids = [f"i-{i}" for i in range(wire.INTERACTIVE_DIRECT + 4)]
        for job_id in ids:
            await producer.enqueue(speech(job_id, tenant="flood"))
        listed = wire.wait_list_key("mimo-v2.5-tts", "flood", "interactive")
        assert await redis.llen(listed) == 4
        cancelled = ids[-4:] + ids[:2]  # two in the queue, the four waiting
        await producer.cancel_many(cancelled)
        admitted = wire.interactive_admitted_key("mimo-v2.5-tts", "flood")
        assert await redis.zcard(admitted) == wire.INTERACTIVE_DIRECT - 2  # places given back
        async with running_worker(settings):
            for job_id in ids:
                result = await producer.wait(job_id, timeout_s=30)
                assert result.status == ("cancelled" if job_id in cancelled else "succeeded")
        assert sum(calls(sim, f"{j} ") for j in cancelled) == 0


class TestRetryWaiting:
    async def test_job_waiting_for_its_retry(
        self, redis_server: RedisServer, sim: RunningSim, tmp_path: Path, redis: ArqRedis
    ) -> None:
        settings = e2e_settings(
            redis_server, sim, tmp_path / "data", retry={"backoff_base_s": 30, "backoff_max_s": 30}
        )
        producer = Producer(redis, settings)
        sim.state.add_fault(Fault(kind="status", status=503, match="r-1 ", times=1))
        async with running_worker(settings):
            await producer.enqueue(speech("r-1"))
            await eventually(lambda: calls(sim, "r-1 ") == 1, timeout_s=20)
            await eventually(lambda: _deferred(producer, "r-1"), timeout_s=20, what="the retry")
            assert (await producer.cancel("r-1")).status is CancelStatus.cancelled
        result = await result_of(redis, "r-1")
        assert result is not None and result.status == "cancelled"
        assert calls(sim, "r-1 ") == 1  # the first try only


async def _deferred(producer: Producer, job_id: str) -> bool:
    return (await producer.status(job_id)).status.value == "deferred"


class TestInFlight:
    async def test_call_closed_within_2s_no_file_no_leak(
        self, producer: Producer, redis: ArqRedis, settings: Settings, sim: RunningSim,
        receiver: Receiver,
    ) -> None:  # fmt: skip
        sim.state.add_fault(Fault(kind="latency", ms=6_000, match="slow-1 "))
        job = speech("slow-1", callback={"url": receiver.url("/hook")})
        async with running_worker(settings):
            await producer.enqueue(job)
            await eventually(lambda: calls(sim, "slow-1 ") == 1, timeout_s=20)
            answer = await producer.cancel("slow-1")
            asked = time.time()
            assert answer.status is CancelStatus.cancelled and answer.in_flight
            result = await producer.wait("slow-1", timeout_s=10)
            recorded = time.time()
            await asyncio.to_thread(receiver.wait_for, 1, 10.0)
        assert result.status == "cancelled" and result.output is None
        assert recorded - asked < 2.0
        call = sim.state.calls_matching("slow-1 ")[0]
        assert call.client_gone_at is not None and call.client_gone_at - asked < 2.0
        assert sim.state.stats()["in_flight"] == 0  # the connection is gone, not parked
        leftovers = [p.name for p in settings.storage.data_dir.rglob("*slow-1*")]
        assert leftovers == []  # neither the output nor its temp file
        assert receiver.requests[0].json()["type"] == "job.cancelled"


async def test_cancel_jobs_records_through_the_finish_path(
    redis: ArqRedis, settings: Settings
) -> None:
    """A run's counters see a cancelled job finish (mimoq.core.runs via core.finish)."""
    producer = Producer(redis, settings)
    await producer.enqueue(speech("run-a-1", run="run-a"))
    await cancel_jobs(redis, ["run-a-1"], settings=settings)
    counts = await redis.hgetall(wire.run_key("run-a"))
    assert counts[b"cancelled"] == b"1"
    assert await redis.scard(wire.run_pending_key("run-a")) == 0


class TestGrantRace:
    async def test_no_call_starts_after_the_cancel_returns(
        self, redis_server: RedisServer, sim: RunningSim, tmp_path: Path, redis: ArqRedis
    ) -> None:
        """A worker granting as fast as the quota allows while every job is cancelled at
        once: a job the cancel did not find granted (``in_flight``) is never sent at all,
        every job answered ``cancelled`` ends cancelled (a call ending as the cancel comes
        in too: its result write is refused), and none is lost or left running."""
        settings = e2e_settings(
            redis_server, sim, tmp_path / "data", worker={"concurrency": 6}, limiter={"window_s": 1.0, "rpm": {"mimo-v2.5-tts": 40}},
        )  # fmt: skip
        sim.state.add_fault(Fault(kind="latency", ms=150, match="race-", times=None))
        producer = Producer(redis, settings)
        ids = [f"race-{i}" for i in range(60)]
        async with running_worker(settings):
            for job_id in ids:
                await producer.enqueue(speech(job_id, tenant="racer"))
            await eventually(lambda: calls(sim, "race-") >= 8, timeout_s=30, what="grants")
            answers = await producer.cancel_many(ids)
            results = [await producer.wait(job_id, timeout_s=30) for job_id in ids]
        sim.state.clear_faults()
        statuses = {a.status for a in answers}
        assert CancelStatus.cancelled in statuses and CancelStatus.not_found not in statuses
        never_sent = [
            a.id for a in answers if a.status is CancelStatus.cancelled and not a.in_flight
        ]
        assert len(never_sent) > 10
        assert [j for j in never_sent if calls(sim, f"{j} ")] == []
        for answer, result in zip(answers, results, strict=True):
            if answer.status is CancelStatus.already_finished:
                assert result.status == "succeeded"
            elif answer.in_flight:  # closed, or its output discarded: never "succeeded"
                assert result.status == "cancelled" and result.output is None
            else:  # never sent: the record says so, without output
                assert result.status == "cancelled" and result.output is None
        assert sim.state.stats()["in_flight"] == 0


class TestTenantCancel:
    async def test_tenant_cancel_mid_run_leaves_the_other_tenant_its_share(
        self, redis_server: RedisServer, sim: RunningSim, tmp_path: Path, redis: ArqRedis
    ) -> None:
        settings = e2e_settings(
            redis_server, sim, tmp_path / "data", worker={"concurrency": 4}, limiter={"window_s": 1.0, "rpm": {"mimo-v2.5-tts": 30}},
        )  # fmt: skip
        producer = Producer(redis, settings)
        mine = [f"ta-{i}" for i in range(40)]
        theirs = [f"tb-{i}" for i in range(40)]
        for a, b in zip(mine, theirs, strict=True):
            await producer.enqueue(speech(a, priority="bulk", tenant="acme"))
            await producer.enqueue(speech(b, priority="bulk", tenant="bolt"))
        async with running_worker(settings):
            await eventually(lambda: calls(sim, "ta-") >= 4, timeout_s=30, what="acme's calls")
            answers = await cancel_tenant(redis, "acme", settings=settings)
            results = {j: await producer.wait(j, timeout_s=60) for j in mine + theirs}
        never_sent = {
            a.id for a in answers if a.status is CancelStatus.cancelled and not a.in_flight
        }
        assert [j for j in never_sent if calls(sim, f"{j} ")] == []
        assert never_sent <= set(mine) and len(never_sent) >= 20
        # nothing lost: every job of both tenants has a record
        assert all(results[j].status == "succeeded" for j in theirs)
        assert all(results[j].status in ("succeeded", "cancelled") for j in mine)
        assert {j for j in mine if results[j].status == "cancelled"} >= never_sent
        # bolt kept its share: before the cancel its calls alternated with acme's
        # bolt kept its share and lost nothing: each of its jobs was sent exactly once
        assert sorted(calls(sim, f"{j} ") for j in theirs) == [1] * len(theirs)


class TestTenantCancelReachesEveryState:
    """``mimoq cancel --tenant`` reaches jobs no wait list holds — deferred by their producer,
    waiting for a retry — through the tenant's index of unfinished jobs (docs/cancel.md)."""

    async def test_queued_deferred_and_retry_waiting_jobs_are_cancelled(
        self, redis_server: RedisServer, sim: RunningSim, tmp_path: Path, redis: ArqRedis
    ) -> None:
        settings = e2e_settings(
            redis_server, sim, tmp_path / "data", retry={"backoff_base_s": 30, "backoff_max_s": 30}
        )
        producer = Producer(redis, settings)
        sim.state.add_fault(Fault(kind="status", status=500, match="tr-1 ", times=1))
        async with running_worker(settings):
            await producer.enqueue(speech("tr-1", tenant="acme"))
            await eventually(lambda: _deferred(producer, "tr-1"), timeout_s=20, what="the retry")
        assert calls(sim, "tr-1 ") == 1
        await producer.enqueue(speech("tq-1", tenant="acme"))
        await producer.enqueue(speech("tq-2", tenant="acme", priority="bulk"))
        await producer.enqueue(speech("td-1", tenant="acme"), defer_s=60)
        await producer.enqueue(speech("ob-1", tenant="bolt"))
        await producer.enqueue(speech("ob-2", tenant="bolt"), defer_s=0.5)
        acme = ["tr-1", "tq-1", "tq-2", "td-1"]
        env = clean_env(REDIS_URL=redis_server.url)
        proc = await asyncio.to_thread(mimoq, "cancel", "--tenant", "acme", env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        answers = {line["id"]: line["status"] for line in map(json.loads, proc.stdout.splitlines())}
        assert answers == dict.fromkeys(acme, "cancelled")
        async with running_worker(settings):
            bolt = [await producer.wait(j, timeout_s=30) for j in ("ob-1", "ob-2")]
        assert [r.status for r in bolt] == ["succeeded", "succeeded"]  # untouched
        for job_id in acme:
            result = await result_of(redis, job_id)
            assert result is not None and result.status == "cancelled", job_id
        assert [calls(sim, f"{j} ") for j in acme] == [1, 0, 0, 0]  # tr-1: its first try only
        # finished and cancelled jobs left the index: nothing but the TTL's own member
        for tenant in ("acme", "bolt"):
            left = await redis.zrange(wire.tenant_jobs_key(tenant), 0, -1)
            assert left == [wire.TENANT_JOBS_TTL_MEMBER.encode()], tenant

    async def test_the_index_has_a_ttl_and_drops_jobs_that_vanished(
        self, producer: Producer, redis: ArqRedis, settings: Settings
    ) -> None:
        await producer.enqueue(speech("gone-1", tenant="fade"))
        await producer.enqueue(speech("kept-1", tenant="fade"), defer_s=3600)
        key = wire.tenant_jobs_key("fade")
        # an hour and more past the longest job's expiry (1 day past its defer), not forever
        ttl_s = await redis.pttl(key) / 1000
        assert 86_400 + 3600 + 3600 - 5 <= ttl_s <= 86_400 + 3600 + 7200
        await redis.delete(wire.job_key("gone-1"))  # vanished without a record
        answers = await cancel_tenant(redis, "fade", settings=settings)
        assert {a.id: a.status for a in answers} == {
            "gone-1": CancelStatus.not_found, "kept-1": CancelStatus.cancelled,
        }  # fmt: skip
        assert await redis.zrange(key, 0, -1) == [wire.TENANT_JOBS_TTL_MEMBER.encode()]


class TestRunCancel:
    async def test_batch_cancel_withdraws_a_run_and_the_run_counts_it(
        self, producer: Producer, redis: ArqRedis, redis_server: RedisServer, tmp_path: Path
    ) -> None:
        ids = [f"nightly-{i}" for i in range(300)]
        for job_id in ids:
            await producer.enqueue(speech(job_id, run="nightly", priority="bulk", tenant="acme"))
        await producer.enqueue(speech("other-run-1", run="other", priority="bulk", tenant="acme"))
        env = clean_env(REDIS_URL=redis_server.url)
        proc = await asyncio.to_thread(mimoq, "batch", "cancel", "nightly", env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        lines = [json.loads(line) for line in proc.stdout.splitlines()]
        assert sorted(line["id"] for line in lines) == sorted(ids)
        assert {line["status"] for line in lines} == {"cancelled"}
        assert json.loads(proc.stderr.strip().splitlines()[-1]) == {"counts": {"cancelled": 300}}
        record = await redis.hgetall(wire.run_key("nightly"))
        assert (
            record[b"cancelled"] == b"300"
            and await redis.scard(wire.run_pending_key("nightly")) == 0
        )
        assert (await producer.status("other-run-1")).status.value == "queued"  # not its run
        bad = await asyncio.to_thread(mimoq, "batch", "cancel", "no good", env=env, cwd=tmp_path)
        assert bad.returncode == 2 and "run must be" in bad.stderr


class TestFanout:
    async def test_a_long_job_waiting_for_its_chunks_cancels_them_all(
        self, producer: Producer, redis: ArqRedis, settings: Settings, sim: RunningSim
    ) -> None:
        # three chunks; every chunk call takes 6 s, so the parent waits for them
        sentence = "Chunky words go here again. "
        text = "fan-1 " + sentence * 260  # over MAX_SPEECH_CHARS (2,500): split
        sim.state.add_fault(Fault(kind="latency", ms=6_000, match="Chunky", times=None))
        async with running_worker(settings):
            await producer.enqueue({"kind": "speech", "id": "fan-1", "input": text})
            await eventually(lambda: calls(sim, "Chunky") >= 1, timeout_s=30, what="a chunk")
            await eventually(
                lambda: redis.exists(wire.fanout_key("fan-1")), timeout_s=30, what="the plan"
            )
            answer = await producer.cancel("fan-1")
            assert answer.status is CancelStatus.cancelled
            parent = await producer.wait("fan-1", timeout_s=10)
            chunk_ids = [f"fan-1.p{i:03d}" for i in range(3)]
            chunks = [await producer.wait(c, timeout_s=10) for c in chunk_ids]
        sim.state.clear_faults()
        assert parent.status == "cancelled" and parent.output is None
        assert [c.status for c in chunks] == ["cancelled"] * 3
        # the chunks' connections were closed, not left to run their 6 s
        await eventually(lambda: sim.state.stats()["in_flight"] == 0, timeout_s=2, what="closed")
