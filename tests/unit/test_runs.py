"""Run records (mimoq.core.runs): counted at enqueue by the script any language runs, at
finish by the one finish path, ended exactly once; on every Redis mimoq supports."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import structlog
from arq.connections import ArqRedis
from redis.exceptions import ResponseError

from mimoq.core import runs, wire
from mimoq.core.errors import InvalidRequestError
from mimoq.core.jobs import Callback, JobResult, check_run_name, parse_job
from mimoq.core.results import read_result
from mimoq.core.settings import Settings
from mimoq.worker.runner import finish, finish_unless_cancelled
from tests.conftest import RedisServer


async def enqueue(redis: ArqRedis, job_id: str, job: dict[str, object]) -> object:
    return await redis.eval(
        wire.enqueue_script(), 4, *wire.enqueue_keys(job_id), job_id, json.dumps(job)
    )


def speech(run: str | None = "r1", **extra: object) -> dict[str, object]:
    job: dict[str, object] = {"kind": "speech", "input": "hi", "priority": "bulk", **extra}
    if run is not None:
        job["run"] = run
    return job


async def test_enqueue_counts_a_job_into_its_run_once(backend: ArqRedis) -> None:
    for i in range(3):
        assert await enqueue(backend, f"j{i}", speech(tenant="team-a")) == 1
    assert await enqueue(backend, "j0", speech(tenant="team-a")) == 0  # idempotent: not twice
    assert await enqueue(backend, "other", speech(run=None)) == 1
    record = await runs.read_run(backend, "r1")
    assert record is not None
    assert (record.total, record.unfinished, record.done) == (3, 3, 0)
    assert record.tenant == "team-a" and record.priority == "bulk"
    assert record.models == {"mimo-v2.5-tts": 3}
    assert record.counts()["waiting"] == 3 and record.counts()["in_flight"] == 0
    assert await backend.smembers(wire.run_pending_key("r1")) == {b"j0", b"j1", b"j2"}
    assert await backend.zrange(wire.RUNS_ACTIVE_KEY, 0, -1) == [b"r1"]
    assert (
        await backend.ttl(wire.run_key("r1")) > 0
        and await backend.ttl(wire.run_pending_key("r1")) > 0
    )


@pytest.mark.parametrize("bad", ["", "-x", "a b", "a:b", "x" * 129, 7])
async def test_a_malformed_run_is_refused_by_the_script_and_by_python(
    backend: ArqRedis, bad: object
) -> None:
    with pytest.raises(ResponseError, match="invalid_request_error: run must be"):
        await enqueue(backend, "j", speech(run=bad))  # type: ignore[arg-type]
    assert not await backend.exists(wire.job_key("j"))
    if isinstance(bad, str):
        with pytest.raises(InvalidRequestError, match="run must be") as err:
            parse_job(speech(run=bad))
        assert err.value.param == "run"


async def test_a_malformed_run_name_is_refused_alike_at_every_door(backend: ArqRedis) -> None:
    # the rule lives in jobs.check_run_name; each door names the field its caller gave
    from mimoq.producer.cancel import cancel_jobs_of_run

    with pytest.raises(InvalidRequestError, match=r"^run must be .*got 'no good'") as err:
        await cancel_jobs_of_run(backend, "no good", settings=Settings())
    assert err.value.param == "run"
    with pytest.raises(InvalidRequestError, match=r"^--run-id must be") as err:
        check_run_name("-x", param="--run-id")
    assert err.value.param == "--run-id"
    assert check_run_name("archive-2026.12_a") == "archive-2026.12_a"
    assert await backend.zrange(wire.RUNS_ACTIVE_KEY, 0, -1) == []


def _result(job_id: str, status: str = "succeeded", run: str | None = "r1") -> JobResult:
    return JobResult(
        id=job_id,
        kind="speech",
        status=status,
        finished_at=time.time(),
        run=run,  # type: ignore[arg-type]
    )


async def test_the_finish_path_counts_each_job_once_and_carries_the_run(
    backend: ArqRedis,
) -> None:
    for i in range(3):
        await enqueue(backend, f"j{i}", speech())
    settings = Settings()
    await finish(backend, _result("j0"), None, settings=settings)
    await finish(backend, _result("j0"), None, settings=settings)  # written twice: counted once
    await finish(backend, _result("j1", "failed"), None, settings=settings)
    record = await runs.read_run(backend, "r1")
    assert record is not None
    assert (record.succeeded, record.failed, record.unfinished) == (1, 1, 1)
    stored = await read_result(backend, "j0")
    assert stored is not None and stored.run == "r1"
    assert record.ended_at is None  # not sealed: a producer may still add jobs


async def test_a_sealed_run_ends_exactly_once_when_its_last_jobs_finish_together(
    backend: ArqRedis,
) -> None:
    ids = [f"j{i}" for i in range(20)]
    for job_id in ids:
        await enqueue(backend, job_id, speech())
    assert await runs.seal(backend, "r1") is False  # jobs are left: not ended yet
    ended = await asyncio.gather(
        *(runs.record_finish(backend, "r1", job_id, "succeeded") for job_id in ids),
        *(runs.record_finish(backend, "r1", job_id, "succeeded") for job_id in ids),
    )
    assert sum(ended) == 1
    record = await runs.read_run(backend, "r1")
    assert record is not None and record.ended_at is not None and record.succeeded == 20
    assert await backend.zcard(wire.RUNS_ACTIVE_KEY) == 0
    assert await runs.seal(backend, "r1") is False  # sealing again ends nothing again


async def test_sealing_a_run_whose_jobs_all_finished_ends_it(backend: ArqRedis) -> None:
    await runs.begin(backend, "r1", tenant=None, priority="bulk")
    await enqueue(backend, "j0", speech())
    assert await runs.record_finish(backend, "r1", "j0", "cancelled") is False
    assert await runs.seal(backend, "r1") is True
    record = await runs.read_run(backend, "r1")
    assert record is not None and record.cancelled == 1 and record.tenant is None


async def test_a_run_begun_again_forgets_its_failures(backend: ArqRedis) -> None:
    for i in range(3):
        await enqueue(backend, f"j{i}", speech())
    await runs.record_finish(backend, "r1", "j0", "succeeded")
    await runs.record_finish(backend, "r1", "j1", "failed")
    await runs.seal(backend, "r1")
    await runs.begin(backend, "r1", tenant="t", priority="bulk", callback={"url": "https://x/"})
    record = await runs.read_run(backend, "r1")
    assert record is not None
    # j1 will be retried: its failure is forgotten and it is counted again when enqueued
    assert (record.total, record.failed, record.sealed) == (2, 0, False)
    assert record.callback == {"url": "https://x/"}


async def test_in_flight_jobs_are_read_from_the_workers_record(backend: ArqRedis) -> None:
    for i in range(4):
        await enqueue(backend, f"j{i}", speech())
    await backend.hset(wire.INFLIGHT_KEY, mapping={"j1": "w1", "j2": "w2", "elsewhere": "w1"})
    record = await runs.read_run(backend, "r1")
    assert record is not None and (record.in_flight, record.waiting) == (2, 2)


async def test_a_run_whose_record_expired_leaves_the_active_list(backend: ArqRedis) -> None:
    await enqueue(backend, "j0", speech())
    await backend.delete(wire.run_key("r1"))
    assert await runs.active_runs(backend) == []
    assert await backend.zcard(wire.RUNS_ACTIVE_KEY) == 0
    assert await runs.read_run(backend, "nope") is None


async def test_the_workers_write_counts_its_run_in_the_same_script_call(
    redis_server: RedisServer,
) -> None:
    """A job of a run costs its run no round trip of its own: the result script counts it,
    ends the sealed run with its last job, and counts nothing when the cancel came first."""
    redis = ArqRedis.from_url(redis_server.url)
    try:
        await redis.flushall()
        for job_id in ("j0", "j1"):
            await enqueue(redis, job_id, speech())
        await runs.seal(redis, "r1")
        await redis.set(wire.cancel_key("j1"), "cancelled")  # its cancel came first
        # the script loaded: the count below is the writes' alone
        await finish_unless_cancelled(redis, _result("w", run=None), None, settings=Settings())
        await redis.config_resetstat()
        with structlog.testing.capture_logs() as logs:
            written = await finish_unless_cancelled(redis, _result("j0"), None, settings=Settings())
            refused = await finish_unless_cancelled(redis, _result("j1"), None, settings=Settings())
        stats = await redis.info("commandstats")
        assert written is not None and refused is None
        # one script call per write: the run's count rode on the first
        assert stats["cmdstat_evalsha"]["calls"] == 2
        record = await runs.read_run(redis, "r1")
        assert record is not None and (record.succeeded, record.unfinished) == (1, 1)
        assert record.ended_at is None and not [e for e in logs if e["event"] == "run.ended"]
        # the cancelled job is recorded as such through finish: the run ends with it
        with structlog.testing.capture_logs() as logs:
            await finish(redis, _result("j1", "cancelled"), None, settings=Settings())
        record = await runs.read_run(redis, "r1")
        assert record is not None and record.cancelled == 1 and record.ended_at is not None
        assert [e["run"] for e in logs if e["event"] == "run.ended"] == ["r1"]
    finally:
        await redis.aclose()


async def test_a_runs_last_job_queues_its_callback_ahead_of_the_runs_end_event(
    backend: ArqRedis,
) -> None:
    """Inline callbacks (the finishing worker attempts them itself) except for a run's last
    job: its delivery job is queued, due now, before the run's end event, as every callback
    was; an earlier job of the run is handed back to be attempted inline, its delivery job
    waiting as a backstop."""
    settings = Settings(callbacks={"allow_networks": "127.0.0.0/8"})
    hook = {"url": "http://127.0.0.1:9/hook"}
    await runs.begin(backend, "r1", tenant=None, priority="bulk", callback=hook)
    for job_id in ("j0", "j1"):
        await enqueue(backend, job_id, speech(callback=hook))
    await runs.seal(backend, "r1")
    callback = Callback.model_validate(hook)

    first = await finish_unless_cancelled(
        backend, _result("j0"), callback, settings=settings, inline_callback=True
    )
    last = await finish_unless_cancelled(
        backend, _result("j1"), callback, settings=settings, inline_callback=True
    )

    assert first is not None and first.delivery is not None
    assert first.delivery.delivery_id == wire.callback_job_id("j0")
    assert last is not None and last.delivery is None
    now_ms = time.time() * 1000
    backstop = await backend.zscore(wire.QUEUE_NAME, wire.callback_job_id("j0"))
    assert backstop is not None and backstop > now_ms + 30_000
    queued = [
        member.decode()
        for member, score in await backend.zrange(wire.QUEUE_NAME, 0, -1, withscores=True)
        if score <= now_ms and member.decode().startswith("cb-")
    ]
    # the last job's delivery, then the run's end event: in the queue's order
    assert queued[0] == wire.callback_job_id("j1")
    assert len(queued) == 2 and queued[1] != wire.callback_job_id("j0")
