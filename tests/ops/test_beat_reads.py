"""What one heartbeat costs the Redis primary: the fleet's depth is read once per beat, and
that one reading feeds every fleet gauge (queue depth, unfinished jobs, desired workers).

A real worker (built as ``mimoq worker`` builds it, not started) beats once on a
redis-server of the test's own, so ``INFO commandstats`` (commands run inside scripts
included) counts that beat's commands and nothing else.
"""

from __future__ import annotations

import json
import time

import pytest
from arq.connections import ArqRedis
from prometheus_client import REGISTRY

from mimoq.core import wire
from mimoq.core.settings import Settings
from mimoq.worker.arq_worker import build_worker
from tests.support.commandstats import COUNTING, command_calls

pytestmark = [pytest.mark.redis]

#: Commands the test itself sends; not part of what a beat costs.
#: Measured for this fleet: 97 commands a beat while the depth was read three times (the
#: fleet_sample.lua counts, read_depth, the desired workers' own read of the wait lists and
#: the queue), 83 with one reading. Most of the rest is the limiter snapshots the desired
#: workers need (zcard, hgetall, evalsha, ...), one per model. 76 once the snapshot read each
#: lane's live tickets once (the whole schedule's own index is gone), with the beat's fold of
#: the usage journal (an LRANGE).
BEAT_BUDGET = 80
OWN = COUNTING


async def _commands(pool: ArqRedis) -> dict[str, int]:
    return dict(await command_calls(pool, own=OWN))


async def _enqueue(pool: ArqRedis, job_id: str, job: dict[str, object], defer_ms: int = 0) -> None:
    args = [job_id, json.dumps(job), *([defer_ms] if defer_ms else [])]
    assert await pool.eval(wire.enqueue_script(), 4, *wire.enqueue_keys(job_id), *args) == 1


async def _fleet(pool: ArqRedis) -> None:
    """A known fleet: 2 jobs due, 1 running (still in the queue, as arq leaves it), 1 due
    in 5 s and 1 tonight; bulk jobs waiting for admission for two tenants and two models;
    two dead letters."""
    speech = {"kind": "speech", "input": "hi"}
    for job_id in ("due-1", "due-2", "running"):
        await _enqueue(pool, job_id, speech)
    await _enqueue(pool, "soon", speech, 5_000)
    await _enqueue(pool, "tonight", speech, 3_600_000)
    await pool.hset(wire.INFLIGHT_KEY, "running", "another-worker")  # type: ignore[misc]
    for i in range(7):
        await _enqueue(pool, f"a{i}", {**speech, "priority": "bulk", "tenant": "alpha"})
    for i in range(4):
        await _enqueue(pool, f"b{i}", {**speech, "priority": "bulk", "tenant": "beta"})
    for i in range(3):
        job = {"kind": "transcription", "audio": "https://example.com/a.wav",
               "priority": "bulk", "tenant": "alpha"}  # fmt: skip
        await _enqueue(pool, f"t{i}", job)
    now = time.time()
    await pool.zadd(wire.DEAD_LETTER_INDEX, {"cb-1": now - 5, "cb-2": now - 50})


def _gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def _unfinished() -> dict[tuple[str, str, str], float]:
    """The non-zero ``mimoq_unfinished_jobs`` series, by (state, lane, kind)."""
    out = {}
    for family in REGISTRY.collect():
        for s in family.samples:
            if s.name == "mimoq_unfinished_jobs" and s.value:
                out[(s.labels["state"], s.labels["lane"], s.labels["kind"])] = s.value
    return out


async def test_one_beat_reads_the_fleet_once_and_feeds_every_gauge(own_pool: ArqRedis) -> None:
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{own_pool.connection_pool.connection_kwargs['port']}",
        worker={"concurrency": 4, "orphan_recovery": False},
        limiter={"enabled": True},
    )
    await _fleet(own_pool)
    worker = build_worker(settings, redis=own_pool, handle_signals=False)
    await own_pool.config_resetstat()
    await worker.heart_beat()
    counts = await _commands(own_pool)
    total = sum(counts.values())
    print(f"one beat: {total} commands; {sorted(counts.items(), key=lambda kv: -kv[1])}")
    # the gauges this beat exported, from one reading
    assert _gauge("mimoq_queue_depth", state="due") == 4  # "running" is in flight
    assert _gauge("mimoq_queue_depth", state="deferred") == 2
    assert _gauge("mimoq_dead_letters_stored") == 2
    assert _unfinished() == {
        ("queued", "interactive", "speech"): 2, ("queued", "bulk", "speech"): 1,
        ("queued", "bulk", "transcription"): 1, ("deferred", "interactive", "speech"): 2,
        ("in_flight", "interactive", "speech"): 1, ("waiting", "bulk", "speech"): 10,
        ("waiting", "bulk", "transcription"): 2,
    }  # fmt: skip
    # Each model: its waiting jobs and the one admitted ahead (11 speech, 3 transcription);
    # 4 more in the queue due within a minute (the running one included). No latency seen
    # yet, so each model's cap is 1.633/s x 8 s = 13.1 slots: 11 + 3 + min(4, headroom)
    # = 18 slots, 5 workers of 4.
    assert _gauge("mimoq_desired_workers") == 5
    # The depth is read once: the models with waiting jobs once (not again for the desired
    # workers), the queue by one ZSCAN and no script counting it again.
    assert counts.get("smembers") == 1 and counts.get("hkeys") == 1, counts
    assert counts.get("zscan") == 1 and "eval" not in counts and "zscore" not in counts, counts
    assert total <= BEAT_BUDGET, f"one beat took {total} commands: {counts}"


async def test_polls_between_beats_do_not_read_the_paused_accounts(own_pool: ArqRedis) -> None:
    """Every poll (5 a second at the default poll delay) runs the worker's heart_beat: its
    read of the paused accounts goes with the beat, once per heartbeat interval (issue #22:
    each idle worker read them 5 times a second)."""
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{own_pool.connection_pool.connection_kwargs['port']}",
        worker={"concurrency": 4, "orphan_recovery": False},
        limiter={"enabled": True},
    )
    worker = build_worker(settings, redis=own_pool, handle_signals=False)
    assert worker.on_startup is not None and worker.on_shutdown is not None
    worker.ctx["redis"] = own_pool  # as arq's main() sets it before on_startup
    await worker.on_startup(worker.ctx)  # the worker's deps, its accounts' breaker among them
    try:
        await own_pool.config_resetstat()
        await worker.heart_beat()  # the first beat
        first = (await _commands(own_pool)).get("smembers", 0)
        await own_pool.config_resetstat()
        for _ in range(5):  # polls within the interval
            await worker.heart_beat()
        polls = await _commands(own_pool)
    finally:
        await worker.on_shutdown(worker.ctx)
    assert first >= 1  # the beat read them (and the models with waiting jobs)
    assert polls.get("smembers", 0) == 0, polls
