"""``mimoq_desired_workers`` from a real Redis: the inputs are read where the fleet keeps them
(wait lists, the queue, the limiters, the workers' heartbeats) and fed to the formula."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import pytest
from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.core.dialect_constants import ASR_MODEL, TTS_MODEL
from mimoq.core.settings import Settings
from mimoq.worker.call_latency import LatencySample
from mimoq.worker.heartbeat import WorkerBeat
from mimoq.worker.limiter import RedisLimiter
from mimoq.worker.limiter.config import LimiterConfig
from mimoq.worker.limiter.observed_capacity import UNOBSERVED_LATENCY_S
from mimoq.worker.scaling import read_desired_workers

pytestmark = pytest.mark.redis

ACCOUNT = "acct-1"
#: the default quota: 100 requests a minute, paced at 98 %
RATE = 100 * 0.98 / 60


def settings(**changes: Any) -> Settings:
    base = Settings(worker={"concurrency": 2}, limiter={"account": ACCOUNT, "target": 0.98})
    return base.updated(**changes)


async def enqueue(redis: ArqRedis, job_id: str, job: dict[str, object]) -> None:
    """What any producer does: enqueue.lua with the documented KEYS."""
    done = await redis.eval(
        wire.enqueue_script(), 4, *wire.enqueue_keys(job_id), job_id, json.dumps(job)
    )
    assert done == 1


async def backlog(redis: ArqRedis, n: int, *, kind: str = "speech", prefix: str = "j") -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(n):
            job = json.dumps({"kind": kind, "input": "hi", "priority": "bulk", "tenant": "t"})
            if kind == "transcription":
                job = json.dumps({"kind": kind, "audio": "https://example.com/a.wav",
                                  "priority": "bulk", "tenant": "t"})  # fmt: skip
            pipe.eval(
                wire.enqueue_script(), 4, *wire.enqueue_keys(f"{prefix}{i}"), f"{prefix}{i}", job
            )
        assert set(await pipe.execute()) == {1}


async def beat(redis: ArqRedis, worker_id: str, samples: list[LatencySample]) -> None:
    """A live worker's heartbeat record carrying the p90 of its recent calls."""
    now = time.time()
    record = WorkerBeat(
        worker_id=worker_id, host="h", pid=1, started_at=now, beat_at=now, interval_s=10,
        ttl_s=30, concurrency=2, call_latency=samples,
    )  # fmt: skip
    await redis.set(wire.WORKER_HEARTBEAT_PREFIX + worker_id, record.model_dump_json())


def tts(p90_s: float, calls: int = 100) -> LatencySample:
    return LatencySample(account=ACCOUNT, model=TTS_MODEL, p90_s=p90_s, calls=calls)


async def test_an_idle_fleet_needs_no_worker(redis: ArqRedis) -> None:
    await beat(redis, "w1", [tts(6.0)])
    desired = await read_desired_workers(redis, settings())
    assert desired.workers == 0 and desired.jobs == 0


@pytest.mark.parametrize("depth", [50, 5_000])
async def test_a_deep_backlog_needs_the_quotas_cap_whatever_its_depth(
    redis: ArqRedis, depth: int
) -> None:
    await beat(redis, "w1", [tts(6.0, calls=150)])
    await beat(redis, "w2", [tts(6.0, calls=50)])
    await backlog(redis, depth)
    desired = await read_desired_workers(redis, settings())
    assert desired.jobs == depth
    # 1.633 grants/s x 6 s p90 = 9.8 slots, over MIMOQ_CONCURRENCY=2
    assert desired.workers == math.ceil(RATE * 6.0 / 2) == 5


async def test_little_work_needs_what_it_demands(redis: ArqRedis) -> None:
    await beat(redis, "w1", [tts(6.0)])
    await backlog(redis, 3)  # one admitted into the queue at once, two waiting
    desired = await read_desired_workers(redis, settings())
    assert (desired.jobs, desired.workers) == (3, 2)
    # interactive jobs go straight into the queue: model unknown, still demand
    for i in range(4):
        await enqueue(redis, f"i{i}", {"kind": "speech", "input": "hi"})
    desired = await read_desired_workers(redis, settings())
    assert (desired.jobs, desired.workers) == (7, 4)


async def test_two_models_need_the_sum_of_their_caps(redis: ArqRedis) -> None:
    await beat(redis, "w1", [tts(6.0)])
    await beat(redis, "w2", [LatencySample(account=ACCOUNT, model=ASR_MODEL, p90_s=3.0, calls=40)])
    await backlog(redis, 300)
    await backlog(redis, 300, kind="transcription", prefix="a")
    desired = await read_desired_workers(redis, settings())
    assert desired.workers == math.ceil((RATE * 6.0 + RATE * 3.0) / 2) == 8
    assert desired.models[TTS_MODEL]["cap_slots"] == pytest.approx(RATE * 6.0, abs=1e-3)
    assert desired.models[ASR_MODEL]["cap_slots"] == pytest.approx(RATE * 3.0, abs=1e-3)


async def test_without_heartbeats_the_limiters_latency_or_the_default_sizes_the_cap(
    redis: ArqRedis,
) -> None:
    await backlog(redis, 500)
    # no call ever seen: the default latency
    desired = await read_desired_workers(redis, settings())
    assert desired.workers == math.ceil(RATE * UNOBSERVED_LATENCY_S / 2)
    # a call the limiter saw (workers since scaled to zero): its EWMA
    limiter = RedisLimiter(LimiterConfig(account=ACCOUNT), redis)
    lease = await limiter.acquire(TTS_MODEL, job_id="seen")
    await limiter.release(lease, usage=None, latency_s=20.0)
    desired = await read_desired_workers(redis, settings())
    # the lease released, its ticket-free job: the backlog still binds at 20 s
    assert desired.workers == math.ceil(RATE * 20.0 / 2)


async def test_a_second_account_doubles_the_cap(
    redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n, name in ((1, "one"), (2, "two")):  # two accounts, as a worker's pool names them
        monkeypatch.setenv(f"MIMO_{n}_API_KEY", f"sk-{name}-0123456789abcdef")
        monkeypatch.setenv(f"MIMO_{n}_ACCOUNT", name)
    two = settings(limiter={"account": None})
    samples = [
        LatencySample(account=name, model=TTS_MODEL, p90_s=6.0, calls=10) for name in ("one", "two")
    ]
    await beat(redis, "w1", samples)
    await backlog(redis, 1_000)
    desired = await read_desired_workers(redis, two)
    assert desired.workers == math.ceil(2 * RATE * 6.0 / 2)


async def test_with_limits_off_the_demand_is_not_capped(redis: ArqRedis) -> None:
    await backlog(redis, 40)
    desired = await read_desired_workers(redis, settings(limiter={"enabled": False}))
    assert (desired.workers, desired.cap_slots) == (20, None)


async def test_a_workers_beat_reading_gives_the_same_value_as_a_read_of_its_own(
    redis: ArqRedis,
) -> None:
    """A worker computes the gauge from its heartbeat's depth reading (no second read of the
    wait lists and the queue); ``mimoq serve`` reads them itself: one value either way."""
    from mimoq.worker.depth import read_depth

    await backlog(redis, 43)
    await backlog(redis, 5, kind="transcription", prefix="asr")
    job = json.dumps({"kind": "speech", "input": "soon"})
    for job_id, defer_ms in (("tonight", 3_600_000), ("soon", 5_000)):
        args = (*wire.enqueue_keys(job_id), job_id, job, defer_ms)
        assert await redis.eval(wire.enqueue_script(), 4, *args) == 1
    reading = await read_depth(redis, int(time.time() * 1000), [])
    assert reading.waiting_by_model == {TTS_MODEL: 42, ASR_MODEL: 4}  # one of each admitted
    workers = []
    for limits_enabled in (True, False):
        own = await read_desired_workers(redis, settings(limiter={"enabled": limits_enabled}))
        from_beat = await read_desired_workers(
            redis, settings(limiter={"enabled": limits_enabled}), reading
        )
        assert from_beat == own
        workers.append(own.workers)
    # 42 + 1 speech, 4 + 1 transcription, "soon". Limits on, no latency seen yet: each
    # model's cap is 1.633/s x 8 s = 13.1 slots, 13.1 + 5 + 1 slots, 10 workers of 2;
    # limits off: 49 jobs, 25 workers.
    assert workers == [10, 25]


async def test_a_job_scheduled_for_later_is_not_demand_yet(redis: ArqRedis) -> None:
    job = json.dumps({"kind": "speech", "input": "later"})
    for job_id, defer_ms in (("tonight", 3_600_000), ("soon", 5_000)):
        args = (*wire.enqueue_keys(job_id), job_id, job, defer_ms)
        assert await redis.eval(wire.enqueue_script(), 4, *args) == 1
    desired = await read_desired_workers(redis, settings())
    assert (desired.jobs, desired.workers) == (1, 1)  # "soon" only
    await redis.zrem(wire.QUEUE_NAME, "soon")
    assert (await read_desired_workers(redis, settings())).workers == 0
