"""worker.heartbeat: the record in Redis, its pace and TTL, liveness, and reading records back."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from arq.connections import ArqRedis
from prometheus_client import REGISTRY

from mimoq.core import wire
from mimoq.core.settings import Settings
from mimoq.worker import depth
from mimoq.worker.heartbeat import (
    HEARTBEAT_TTL_FACTOR,
    Heartbeat,
    LivenessStatus,
    WorkerBeat,
    read_beats,
)


class Clock:
    """A hand-driven clock (monotonic and wall)."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeWorker:
    """What arq's worker exposes to a heartbeat, with real tasks."""

    tasks: dict[str, asyncio.Task[Any]] = field(default_factory=dict)
    allow_pick_jobs: bool = True
    jobs_complete: int = 4
    jobs_failed: int = 1
    jobs_retried: int = 2


def beat_record(**overrides: Any) -> WorkerBeat:
    values: dict[str, Any] = {
        "worker_id": "w", "host": "h", "pid": 1, "started_at": 900.0, "beat_at": 1000.0,
        "interval_s": 10.0, "ttl_s": 30.0, "concurrency": 8,
    }  # fmt: skip
    values.update(overrides)
    return WorkerBeat(**values)


@pytest.mark.parametrize(
    ("overrides", "now", "max_age_s", "live"),
    [
        ({}, 1000.0, None, True),
        ({}, 1029.0, None, True),  # within its own TTL
        ({}, 1031.0, None, False),  # older than its TTL
        ({}, 1010.0, 5.0, False),  # an explicit max age wins
        ({}, 1004.0, 5.0, True),
        ({"draining": True}, 1000.0, None, False),  # shutting down: not a serving worker
        ({}, 990.0, None, True),  # a beat "from the future" (clock skew) is fresh
    ],
)
def test_worker_beat_live(
    overrides: dict[str, Any], now: float, max_age_s: float | None, live: bool
) -> None:
    assert beat_record(**overrides).live(now, max_age_s=max_age_s) is live


@pytest.fixture
def clocks() -> tuple[Clock, Clock]:
    return Clock(5_000.0), Clock(1_700_000_000.0)


@pytest.fixture
def heartbeat(clocks: tuple[Clock, Clock]) -> Heartbeat:
    mono, wall = clocks
    settings = Settings(ops={"heartbeat_interval_s": 2.0}, worker={"concurrency": 7})
    return Heartbeat(settings, worker_id="test-worker", clock=wall, monotonic=mono)


@pytest.fixture
async def worker() -> AsyncIterator[FakeWorker]:
    blocker = asyncio.Event()
    running = asyncio.create_task(blocker.wait())
    finished = asyncio.create_task(asyncio.sleep(0))
    await finished
    yield FakeWorker(tasks={"a": running, "b": finished})
    blocker.set()
    await running


@pytest.mark.redis
async def test_beat_writes_the_record_with_a_ttl(
    redis: ArqRedis, heartbeat: Heartbeat, worker: FakeWorker, clocks: tuple[Clock, Clock]
) -> None:
    await heartbeat.beat(redis, worker)
    key = wire.WORKER_HEARTBEAT_PREFIX + "test-worker"
    record = json.loads(await redis.get(key))
    assert record["worker_id"] == "test-worker"
    assert record["beat_at"] == clocks[1].now
    assert (record["in_flight"], record["draining"], record["concurrency"]) == (1, False, 7)
    assert (record["jobs_complete"], record["jobs_failed"], record["jobs_retried"]) == (4, 1, 2)
    assert record["ttl_s"] == 2.0 * HEARTBEAT_TTL_FACTOR
    assert 5_000 < await redis.pttl(key) <= 6_000


@pytest.mark.redis
async def test_beats_once_per_interval_but_at_once_when_draining(
    redis: ArqRedis, heartbeat: Heartbeat, worker: FakeWorker, clocks: tuple[Clock, Clock]
) -> None:
    mono, _ = clocks
    key = wire.WORKER_HEARTBEAT_PREFIX + "test-worker"
    await heartbeat.beat(redis, worker)
    await redis.delete(key)
    mono.now += 1.0  # within the interval: polls keep coming, Redis is left alone
    await heartbeat.beat(redis, worker)
    assert await redis.get(key) is None
    worker.allow_pick_jobs = False  # SIGTERM: the fleet must learn now, not in 2 s
    await heartbeat.beat(redis, worker)
    assert json.loads(await redis.get(key))["draining"] is True
    await redis.delete(key)
    mono.now += 2.0
    await heartbeat.beat(redis, worker)
    assert await redis.get(key) is not None


@pytest.mark.redis
async def test_beat_samples_fleet_gauges(
    redis: ArqRedis, heartbeat: Heartbeat, worker: FakeWorker, clocks: tuple[Clock, Clock]
) -> None:
    now_ms = int(clocks[1].now * 1000)
    await redis.zadd(
        wire.QUEUE_NAME, {"due-1": now_ms - 5, "due-2": now_ms, "later": now_ms + 60_000}
    )
    wall = clocks[1].now
    # Three dead letters within the 30-day retention, and one past it that the index still
    # names (it is dropped at the next dead letter's write): not counted.
    await redis.zadd(
        wire.DEAD_LETTER_INDEX,
        {"cb-1": wall - 1, "cb-2": wall - 2, "cb-3": wall - 3, "cb-old": wall - 31 * 86_400},
    )
    # the worker's sampler (MimoqWorker.sample_fleet): the gauges from one depth reading
    heartbeat.sampler = functools.partial(depth.sample, dead_letter_ttl_s=30 * 86_400)
    await heartbeat.beat(redis, worker)
    assert REGISTRY.get_sample_value("mimoq_queue_depth", {"state": "due"}) == 2
    assert REGISTRY.get_sample_value("mimoq_queue_depth", {"state": "deferred"}) == 1
    assert REGISTRY.get_sample_value("mimoq_dead_letters_stored") == 3
    assert REGISTRY.get_sample_value("mimoq_jobs_in_flight") == 1


@pytest.mark.redis
async def test_liveness_follows_the_polling_loop(
    redis: ArqRedis, heartbeat: Heartbeat, worker: FakeWorker, clocks: tuple[Clock, Clock]
) -> None:
    mono, _ = clocks
    assert heartbeat.liveness().status is LivenessStatus.starting
    assert not heartbeat.liveness().ok
    await heartbeat.beat(redis, worker)
    assert heartbeat.liveness().ok and heartbeat.liveness().last_beat_age_s == 0.0
    mono.now += heartbeat.ttl_s + 0.1  # the loop stopped turning
    assert heartbeat.liveness().status is LivenessStatus.stalled
    await heartbeat.beat(redis, worker)
    assert heartbeat.liveness().ok
    await heartbeat.stop(redis)
    assert heartbeat.liveness().status is LivenessStatus.stopped


@pytest.mark.redis
async def test_stop_deletes_the_record_and_silences_later_beats(
    redis: ArqRedis, heartbeat: Heartbeat, worker: FakeWorker, clocks: tuple[Clock, Clock]
) -> None:
    key = wire.WORKER_HEARTBEAT_PREFIX + "test-worker"
    await heartbeat.beat(redis, worker)
    await heartbeat.stop(redis)
    assert await redis.get(key) is None
    clocks[0].now += 100
    await heartbeat.beat(redis, worker)  # a poll racing the shutdown must not resurrect it
    assert await redis.get(key) is None


@pytest.mark.redis
async def test_read_beats_skips_unreadable_records(redis: ArqRedis) -> None:
    good = beat_record(worker_id="b-good")
    await redis.set(wire.WORKER_HEARTBEAT_PREFIX + "b-good", good.model_dump_json())
    await redis.set(wire.WORKER_HEARTBEAT_PREFIX + "a-junk", b"not json")
    await redis.set(wire.WORKER_HEARTBEAT_PREFIX + "c-partial", b'{"worker_id": "c"}')
    await redis.set("mimoq:workers-elsewhere", good.model_dump_json())  # not under the prefix
    assert await read_beats(redis) == [good]


@pytest.mark.redis
async def test_read_beats_pages_through_many_workers(redis: ArqRedis) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(1_234):
            pipe.set(wire.WORKER_HEARTBEAT_PREFIX + f"w{i:05d}",
                     beat_record(worker_id=f"w{i:05d}").model_dump_json())  # fmt: skip
        await pipe.execute()
    beats = await read_beats(redis)
    assert [b.worker_id for b in beats] == [f"w{i:05d}" for i in range(1_234)]
