"""A long job's parent waits for its chunks without polling: the last chunk to finish makes it
due (core/scripts/fanout_chunk_done.lua), and it gives back the limiter slot and look-ahead
place its admission gave it, since it makes no MiMo call of its own.

A real redis-server, real arq workers, the simulator as MiMo (each answer slowed down, so
that the chunks run for seconds while the parent waits).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from arq.connections import ArqRedis

from mimoq.core import scripts, wire
from mimoq.core.dialect_constants import TTS_MODEL
from mimoq.core.jobs import JobResult
from mimoq.core.settings import Settings
from mimoq.core.splitting.plan import child_id
from mimoq.producer.client import Producer
from mimoq.sim.sim_server import RunningSim
from mimoq.worker import metrics
from mimoq.worker.arq_worker import MimoqWorker
from mimoq.worker.fanout import BACKSTOP_POLL_S
from mimoq.worker.limiter.config import KEY_PARTS, LimiterConfig, limiter_keys
from tests.batch.conftest import add_fault
from tests.conftest import RedisServer
from tests.e2e.conftest import e2e_settings, running_worker
from tests.support.limiter_tickets import slot_of
from tests.support.polling import eventually

pytestmark = [pytest.mark.redis, pytest.mark.slow]
#: Four chunks of speech (each chunk is at most 2,500 characters).
LONG_TEXT = " ".join(
    f"This is sentence number {i}, which is about as long as a sentence gets." for i in range(120)
)
CHUNKS = 4
ANSWER_MS = 1500


@pytest.fixture
def settings(redis_server: RedisServer, sim: RunningSim, tmp_path: Path) -> Settings:
    return e2e_settings(redis_server, sim, tmp_path / "data", limiter={"enabled": False})


def _chunk_waits() -> float:
    """How many times a speech parent has waited for its chunks in this process so far."""
    return metrics.DEFERRALS.labels("speech", "chunks")._value.get()  # type: ignore[attr-defined,no-any-return]


async def _finished(producer: Producer, job_id: str) -> JobResult:
    result = await producer.result(job_id)
    assert result is not None, job_id
    return result


async def test_the_last_chunk_wakes_its_parent_which_waited_once(
    producer: Producer, worker: MimoqWorker, sim: RunningSim, redis: ArqRedis
) -> None:
    add_fault(sim, kind="latency", ms=ANSWER_MS, times=None)
    waits_before = _chunk_waits()
    enqueued = await producer.enqueue(
        {"kind": "speech", "id": "book", "input": LONG_TEXT, "voice": "Mia"}
    )
    result = await producer.wait(enqueued.job_id, timeout_s=60)
    assert result.status == "succeeded", result.error

    chunks = [await _finished(producer, child_id("book", i)) for i in range(CHUNKS)]
    assert all(c.status == "succeeded" for c in chunks)
    # the chunks ran for 1.5 s or more while the parent waited, yet it looked once: when it
    # planned. A parent that polled (every 0.5-0.7 s before) would have waited 3+ times.
    assert _chunk_waits() - waits_before == 1
    # ... and it was woken, not brought back by its 30 s backstop
    last_chunk = max(c.finished_at for c in chunks if c.finished_at is not None)
    assert result.finished_at is not None
    assert result.finished_at - last_chunk < BACKSTOP_POLL_S / 10
    wake = await redis.hgetall(wire.fanout_wake_key("book"))  # type: ignore[misc]
    assert wake == {
        b"total": str(CHUNKS).encode(),
        **{child_id("book", i).encode(): b"1" for i in range(CHUNKS)},
    }


async def test_metadata_naming_a_parent_wakes_nothing_unless_the_id_is_its_chunks(
    producer: Producer, worker: MimoqWorker, sim: RunningSim, redis: ArqRedis
) -> None:
    """Any producer may write ``metadata: {"parent": ..., "chunk": ...}``; only the job with
    that chunk's id (which the parent enqueues, and an enqueue of an existing id is a no-op)
    is counted for the parent."""
    add_fault(sim, kind="latency", ms=ANSWER_MS, times=None)
    waits_before = _chunk_waits()
    await producer.enqueue({"kind": "speech", "id": "book", "input": LONG_TEXT, "voice": "Mia"})
    await eventually(
        lambda: redis.exists(wire.fanout_wake_key("book")), timeout_s=30, what="the plan"
    )
    forged = [
        {"id": "forged-1", "metadata": {"parent": "book", "chunk": 0}},
        {"id": "forged-2", "metadata": {"parent": "book", "chunk": "0"}},
        {"id": "book.p999", "metadata": {"parent": "book", "chunk": 999}},  # past the plan
        {"id": "forged-3", "metadata": ["book", 0]},
    ]
    for job in forged:
        await producer.enqueue({"kind": "speech", "input": "Hello.", "voice": "Mia", **job})
    for job in forged:
        assert (await producer.wait(str(job["id"]), timeout_s=60)).status == "succeeded"
    counted = await redis.hkeys(wire.fanout_wake_key("book"))  # type: ignore[misc]
    assert not {b"forged-1", b"forged-2", b"forged-3", b"book.p999"} & set(counted)
    result = await producer.wait("book", timeout_s=60)
    assert result.status == "succeeded", result.error
    # it waited once, when it planned, and was woken by its own last chunk only
    assert _chunk_waits() - waits_before == 1


@pytest.mark.parametrize("limiter", [{"window_s": 1.0, "default_rpm": 4}])
async def test_a_bulk_parent_gives_its_slot_and_look_ahead_place_back(
    redis_server: RedisServer,
    sim: RunningSim,
    redis: ArqRedis,
    tmp_path: Path,
    limiter: dict[str, float],
) -> None:
    """Bulk jobs get their slots as they are admitted (docs/scheduling.md). A parent makes no
    call: its slot goes to the schedule's last ticket and its look-ahead place to the next
    waiting job, instead of passing unused (and its queue place no longer follows a ticket
    that re-plans move)."""
    settings = e2e_settings(redis_server, sim, tmp_path / "data", limiter=limiter)
    producer = Producer(redis, settings)
    account = LimiterConfig.from_settings(settings).account
    keys = dict(zip(KEY_PARTS, limiter_keys(account, TTS_MODEL), strict=True))
    short = [f"short-{i}" for i in range(4)]
    for job_id in short[:2]:
        await producer.enqueue(
            {"kind": "speech", "id": job_id, "input": "Hello.", "voice": "Mia", "priority": "bulk"}
        )
    await producer.enqueue(
        {"kind": "speech", "id": "book", "input": LONG_TEXT, "voice": "Mia", "priority": "bulk"}
    )
    for job_id in short[2:]:
        await producer.enqueue(
            {"kind": "speech", "id": job_id, "input": "Hello.", "voice": "Mia", "priority": "bulk"}
        )
    async with running_worker(settings):
        await eventually(
            lambda: redis.exists(wire.fanout_key("book")), timeout_s=30, what="the plan"
        )
        # planned: the parent holds no ticket and no look-ahead place any more
        assert await slot_of(redis, account, TTS_MODEL, "book") is None
        assert await redis.zscore(wire.admitted_key(TTS_MODEL), "book") is None
        result = await producer.wait("book", timeout_s=60)
        assert result.status == "succeeded", result.error
        for job_id in short:
            assert (await producer.wait(job_id, timeout_s=60)).status == "succeeded"
    # every grant was a call: the short jobs' and the chunks', none the parent's
    grants = await redis.hget(keys["lanes"], "g:bulk:_")  # type: ignore[misc]
    assert grants == str(len(short) + CHUNKS).encode()


async def test_a_chunk_counted_between_the_parents_read_and_its_wait_is_not_lost(
    redis: ArqRedis,
) -> None:
    """``fanout_wait.lua`` is atomic with the chunks' count: a parent whose last chunk was
    counted after it read the results comes back after the short look, not the backstop."""
    wake = wire.fanout_wake_key("p")
    await redis.hset(wake, mapping={"total": 2, "p.p000": 1})  # type: ignore[misc]
    await redis.zadd(wire.QUEUE_NAME, {"p": 1})
    keys = [wake, wire.QUEUE_NAME]
    now_ms = time.time() * 1000

    queued, wait_ms = await scripts.named("fanout_wait").run(redis, keys, ["p", 30000, 500])
    assert (queued, wait_ms) == (1, 30000)
    score = await redis.zscore(wire.QUEUE_NAME, "p")
    assert score is not None and now_ms + 29000 < score < now_ms + 31000

    # the last chunk: counted once (a second run of it counts nothing), and it wakes "p"
    done = scripts.named("fanout_chunk_done")
    assert await done.run(redis, keys, ["p.p001", 1, "p"]) == 1
    score = await redis.zscore(wire.QUEUE_NAME, "p")
    assert score is not None and score < now_ms + 5000
    assert await done.run(redis, keys, ["p.p001", 1, "p"]) == 0

    # counted before the parent's wait: the wait is the short look
    await redis.zadd(wire.QUEUE_NAME, {"p": 1})
    queued, wait_ms = await scripts.named("fanout_wait").run(redis, keys, ["p", 30000, 500])
    assert (queued, wait_ms) == (1, 500)
    # a parent not in the queue (finished, cancelled) is left to its worker's own deferral,
    # and its last chunk does not put it back
    await redis.zrem(wire.QUEUE_NAME, "p")
    assert await scripts.named("fanout_wait").run(redis, keys, ["p", 30000, 500]) == [0, 500]
    gone = [wire.fanout_wake_key("q"), wire.QUEUE_NAME]
    await redis.hset(gone[0], mapping={"total": 1})  # type: ignore[misc]
    assert await done.run(redis, gone, ["q.p000", 0, "q"]) == 0
    assert await redis.zscore(wire.QUEUE_NAME, "q") is None
