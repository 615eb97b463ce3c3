"""Orphan recovery against a real Redis: who counts as dead, and what is (not) re-queued."""

from __future__ import annotations

import json

import pytest
from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.core.redis_retry import BACKOFF_CAP_S
from mimoq.worker.heartbeat import HEARTBEAT_TTL_FACTOR
from mimoq.worker.orphans import OrphanWatch

pytestmark = pytest.mark.redis

INTERVAL_S = 10.0


def _watch(*, enabled: bool = True) -> OrphanWatch:
    """A watch that has seen no Redis outage: the process-wide record of the last one is
    another test's (a sweep right after one judges no one)."""
    return OrphanWatch("me", INTERVAL_S, enabled=enabled, restored_at=lambda: float("-inf"))


async def _beat(redis: ArqRedis, worker_id: str, *, ttl_ms: int) -> None:
    record = {
        "worker_id": worker_id, "host": "h", "pid": 1, "started_at": 0.0, "beat_at": 0.0,
        "interval_s": INTERVAL_S, "ttl_s": INTERVAL_S * 3, "concurrency": 1,
    }  # fmt: skip
    await redis.set(wire.WORKER_HEARTBEAT_PREFIX + worker_id, json.dumps(record), px=ttl_ms)


async def _running(redis: ArqRedis, job_id: str, owner: str) -> None:
    """What a worker leaves behind mid-job: job key, queue entry, in-progress key, owner."""
    await redis.set(wire.job_key(job_id), b"{}")
    await redis.zadd(wire.QUEUE_NAME, {job_id: 1_000})
    await redis.set(wire.in_progress_key(job_id), b"1", px=300_000)
    await redis.hset(wire.INFLIGHT_KEY, job_id, owner)


async def test_a_dead_or_silent_owners_jobs_are_handed_back_and_nothing_else(
    redis: ArqRedis,
) -> None:
    await _beat(redis, "alive", ttl_ms=30_000)  # just beat
    await _beat(redis, "silent", ttl_ms=9_000)  # 21 s (> 2 intervals) without a beat
    # "gone" has no record at all (expired, or SIGKILLed long ago)
    await _running(redis, "j-alive", "alive")
    await _running(redis, "j-silent", "silent")
    await _running(redis, "j-gone", "gone")
    await _running(redis, "j-mine", "me")
    # finished meanwhile: arq deleted the job key and the queue entry; the entry lingers
    await redis.hset(wire.INFLIGHT_KEY, "j-done", "gone")
    # result written, then the worker died before arq marked it done: runs again, and the
    # runner then finds the result (MiMo is not called twice: tests/e2e)
    await _running(redis, "j-recorded", "gone")
    await redis.set(wire.result_key("j-recorded"), "{}")

    requeued = await _watch().sweep(redis)

    assert requeued == 3
    for job in ("j-silent", "j-gone", "j-recorded"):
        assert not await redis.exists(wire.in_progress_key(job)), job
        assert await redis.zscore(wire.QUEUE_NAME, job) == 1_000  # due at once, as queued
    for job in ("j-alive", "j-mine"):
        assert await redis.exists(wire.in_progress_key(job)), job
    assert not await redis.exists(wire.job_key("j-done"))
    assert await redis.zscore(wire.QUEUE_NAME, "j-done") is None  # not resurrected
    assert await redis.hgetall(wire.INFLIGHT_KEY) == {b"j-alive": b"alive", b"j-mine": b"me"}


async def test_a_job_taken_over_by_a_live_worker_is_left_alone(redis: ArqRedis) -> None:
    await _beat(redis, "new-owner", ttl_ms=30_000)
    await _running(redis, "j", "new-owner")  # the dead owner's entry was overwritten

    assert await _watch().sweep(redis) == 0
    assert await redis.exists(wire.in_progress_key("j"))


async def test_queue_entries_scored_zero_are_rescored_to_now(redis: ArqRedis) -> None:
    await redis.zadd(wire.QUEUE_NAME, {"raw-zadd": 0, "fine": 5, "negative": -3})
    now_ms = (await redis.time())[0] * 1000

    await _watch().sweep(redis)

    score = await redis.zscore(wire.QUEUE_NAME, "raw-zadd")
    assert score is not None and score >= now_ms
    assert await redis.zscore(wire.QUEUE_NAME, "fine") == 5
    assert await redis.zscore(wire.QUEUE_NAME, "negative") == -3  # due already: arq runs it


async def test_a_worker_records_and_forgets_only_its_own_jobs(redis: ArqRedis) -> None:
    watch = _watch(enabled=False)
    await watch.tick(redis, ["a", "b"])
    assert await redis.hgetall(wire.INFLIGHT_KEY) == {b"a": b"me", b"b": b"me"}
    await redis.hset(wire.INFLIGHT_KEY, "b", "other")  # b was re-run by another worker
    await redis.script_flush()  # Redis restarted: the forget script is loaded again

    await watch.tick(redis, [])

    assert await redis.hgetall(wire.INFLIGHT_KEY) == {b"b": b"other"}


async def test_forgetting_many_finished_jobs_costs_a_few_commands(redis: ArqRedis) -> None:
    """A beat forgets every job its worker finished since the last one with one HMGET and
    one HDEL per 500 ids (an HGET and an HDEL per job before), still only its own."""
    watch = _watch(enabled=False)
    ids = [f"j{i}" for i in range(1200)]
    await watch.tick(redis, ids)
    await redis.hset(wire.INFLIGHT_KEY, "j7", "other")
    await redis.config_resetstat()

    await watch.tick(redis, [])

    assert await redis.hgetall(wire.INFLIGHT_KEY) == {b"j7": b"other"}
    stats = await redis.info("commandstats")
    assert stats["cmdstat_hmget"]["calls"] == 3 and stats["cmdstat_hdel"]["calls"] == 3
    assert "cmdstat_hget" not in stats


async def test_after_losing_redis_it_waits_an_interval_before_judging_others(
    redis: ArqRedis,
) -> None:
    now = [100.0]
    watch = OrphanWatch(
        "me", INTERVAL_S, monotonic=lambda: now[0], restored_at=lambda: float("-inf")
    )
    await _running(redis, "j", "gone")
    broken = ArqRedis.from_url("redis://127.0.0.1:1/0")  # nothing listens on port 1

    await watch.tick(broken, ["x"])  # an outage: logged, not raised
    await broken.aclose()
    await watch.tick(redis, [])
    assert await redis.exists(wire.in_progress_key("j"))  # not yet: others may be back soon

    now[0] += INTERVAL_S
    await watch.tick(redis, [])
    assert not await redis.exists(wire.in_progress_key("j"))


async def test_right_after_redis_came_back_it_gives_others_time_to_beat(
    redis: ArqRedis,
) -> None:
    now = [500.0]
    restored = [499.0]  # commands just waited out an outage: nobody's beat is current
    watch = OrphanWatch("me", INTERVAL_S, monotonic=lambda: now[0], restored_at=lambda: restored[0])
    await _running(redis, "j", "gone")

    await watch.tick(redis, [])
    assert await redis.exists(wire.in_progress_key("j"))

    # a beat's lifetime and two of the longest backoffs: its owner's next try may be a whole
    # backoff away, and a loaded host adds to that
    grace_s = HEARTBEAT_TTL_FACTOR * INTERVAL_S + 2 * BACKOFF_CAP_S
    now[0] = restored[0] + grace_s - 1
    await watch.tick(redis, [])
    assert await redis.exists(wire.in_progress_key("j"))

    now[0] = restored[0] + grace_s
    await watch.tick(redis, [])
    assert not await redis.exists(wire.in_progress_key("j"))


async def test_a_sweep_whose_reads_waited_out_an_outage_judges_no_one(redis: ArqRedis) -> None:
    """The sweep starts while Redis is down (nothing told this worker yet); its first read
    waits the outage out, and the beats it then reads lapsed with Redis: no one is dead."""
    now = [500.0]
    restored = [float("-inf")]
    watch = OrphanWatch("me", INTERVAL_S, monotonic=lambda: now[0], restored_at=lambda: restored[0])
    await _running(redis, "j", "gone")

    class ComesBackDuringTheRead:
        """``redis`` whose first read returns as Redis is restored (what the retry does)."""

        def __getattr__(self, name: str) -> object:
            return getattr(redis, name)

        async def hgetall(self, key: str) -> object:
            restored[0] = now[0]
            return await redis.hgetall(key)

    assert await watch.sweep(ComesBackDuringTheRead()) == 0  # type: ignore[arg-type]
    assert await redis.exists(wire.in_progress_key("j"))
