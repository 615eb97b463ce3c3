"""Routing across a key pool: every account serves, a fan-out job stays on one account."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from arq.connections import ArqRedis

from mimoq.core.dialect_constants import TTS_MODEL
from mimoq.core.errors import CapacityDeferred
from mimoq.core.keypool import fingerprint
from mimoq.producer.client import Producer
from mimoq.sim.sim_config import SimConfig, quota_from_options
from mimoq.worker.accounts.route_choice import affinity
from mimoq.worker.limiter import LimiterConfig, build_limiter
from tests.accounts.conftest import pool_settings, simulator
from tests.accounts.test_breaker_storms import start_workers, stop_workers
from tests.conftest import RedisServer
from tests.e2e.conftest import running_worker
from tests.support.cli import clean_env

pytestmark = [pytest.mark.redis, pytest.mark.slow]
KEYS = ["sk-route-one-0000", "sk-route-two-0000"]


def test_a_chunk_is_routed_by_its_parent() -> None:
    assert affinity("book.p007") == "book"
    assert affinity("book") == "book"
    assert affinity("a.p1") == "a.p1"  # not the chunk suffix (three digits at least)


async def test_two_accounts_share_a_backlog_and_results_name_them(
    redis_server: RedisServer, redis: ArqRedis, tmp_path: Path
) -> None:
    with simulator(SimConfig()) as sim:
        settings = pool_settings(redis_server, sim.url, tmp_path / "data", KEYS)
        producer = Producer(redis, settings)
        ids = [
            (await producer.enqueue({"kind": "speech", "input": f"Line {i}."})).job_id
            for i in range(24)
        ]
        long_text = " ".join(f"Sentence number {i} of a long chapter." for i in range(160))
        parent = (await producer.enqueue({"kind": "speech", "input": long_text})).job_id
        async with running_worker(settings):
            results = [await producer.wait(i, timeout_s=60) for i in [*ids, parent]]
        assert all(r.status == "succeeded" for r in results), [r.error for r in results]
        expected = {fingerprint(k) for k in KEYS}
        served = {r.account for r in results[:-1]}
        assert served == expected  # both accounts took part
        # The chunks of the long job all went through the account its result names.
        chunks = [await producer.result(f"{parent}.p{i:03d}") for i in range(3)]
        assert results[-1].account in expected
        assert {c.account for c in chunks if c is not None} == {results[-1].account}
        # Fingerprints only: no key appears in any result.
        assert not any(k in r.model_dump_json() for k in KEYS for r in results)


async def test_two_accounts_each_within_its_own_quota_without_a_429(
    redis_server: RedisServer, redis: ArqRedis, tmp_path: Path
) -> None:
    # Each key is an account with its own quota upstream and its own limiter here: the
    # backlog is served by both at once, and neither is ever pushed past its quota. The
    # limiter runs at 80 % of the upstream quota, as in the test below: a 2 s window is
    # MiMo's minute compressed 30 times, so a loaded host's grant-to-send lag of 50 ms is
    # 1.5 s of a real minute, beyond what the guard's margin is for (docs/scheduling.md).
    quota = quota_from_options(rpm={"*": 10}, window_s=2)
    config = SimConfig(api_keys=tuple(KEYS), per_key_quota=True, quota=quota)
    with simulator(config) as sim:
        settings = pool_settings(
            redis_server, sim.url, tmp_path / "data", KEYS, limiter={"enabled": True, "default_rpm": 8, "window_s": 2},
        )  # fmt: skip
        producer = Producer(redis, settings)
        ids = [(await producer.enqueue({"kind": "speech", "input": f"Quota {i}."})).job_id
               for i in range(40)]  # fmt: skip
        async with running_worker(settings):
            done = [await producer.wait(i, timeout_s=120) for i in ids]
        assert {r.status for r in done} == {"succeeded"}
        assert {r.account for r in done} == {fingerprint(k) for k in KEYS}
        assert sim.state.stats()["responses"].get("429", 0) == 0


async def test_worker_processes_serve_one_backlog_through_both_accounts_without_a_429(
    redis_server: RedisServer, redis: ArqRedis, tmp_path: Path
) -> None:
    # Real worker processes, each key an account with its own quota upstream (the
    # simulator's per-key quota) and here. Routing by the soonest free slot keeps both
    # accounts' schedules level: each serves about half the backlog, never past its quota,
    # and every chunk of a long job goes through its parent's account. The limiter runs at
    # 80 % of the upstream quota: headroom for a loaded host's grant-to-send lag, not for
    # routing (calls sent through one account's key on the other's quota would be 2x).
    quota = quota_from_options(rpm={"*": 20}, window_s=10)
    config = SimConfig(api_keys=tuple(KEYS), per_key_quota=True, quota=quota, latency_ms=5)
    with simulator(config) as sim:
        env = clean_env(
            REDIS_URL=redis_server.url, MIMO_API_KEYS=" ".join(KEYS), MIMO_BASE_URL=sim.url,
            MIMOQ_DATA_DIR=str(tmp_path / "data"), MIMOQ_CONCURRENCY="8",
            MIMOQ_LIMITS_ENABLED="true", MIMOQ_LIMIT_DEFAULT_RPM="16",
            MIMOQ_LIMIT_WINDOW_S="10", MIMOQ_POLL_DELAY_S="0.01",
            MIMOQ_BACKOFF_BASE_S="0.01", MIMOQ_BACKOFF_MAX_S="0.05", MIMOQ_LOG_LEVEL="INFO",
        )  # fmt: skip
        settings = pool_settings(redis_server, sim.url, tmp_path / "data", KEYS)
        producer = Producer(redis, settings)
        ids = [(await producer.enqueue({"kind": "speech", "input": f"Backlog {i}."})).job_id
               for i in range(40)]  # fmt: skip
        long_text = " ".join(f"Sentence number {i} of a long chapter." for i in range(160))
        parent = (await producer.enqueue({"kind": "speech", "input": long_text})).job_id
        workers = start_workers(2, env, tmp_path)
        try:
            done = [await producer.wait(i, timeout_s=120) for i in [*ids, parent]]
        finally:
            stop_workers(workers)
        assert {r.status for r in done} == {"succeeded"}, [r.error for r in done]
        assert sim.state.stats()["responses"].get("429", 0) == 0
        served = Counter(r.account for r in done[:-1])
        assert set(served) == {fingerprint(k) for k in KEYS}
        # Level schedules: a hash, or one account filling up first, would skew this.
        assert min(served.values()) >= 14, served
        chunks = [await producer.result(f"{parent}.p{i:03d}") for i in range(3)]
        assert {c.account for c in chunks if c is not None} == {done[-1].account}
        logs = "".join(p.read_text() for p in tmp_path.glob("worker*.log"))
        assert not any(k in logs for k in KEYS)


async def test_new_work_goes_to_the_account_that_is_free_sooner(
    redis_server: RedisServer, redis: ArqRedis, tmp_path: Path
) -> None:
    # The first account's schedule is already booked ~30 s ahead (other jobs' tickets); the
    # second is idle. Every new job is served by the second, which can serve 20 of them
    # before the first's next free slot (a hash would have queued half behind the booking).
    with simulator(SimConfig(api_keys=tuple(KEYS))) as sim:
        settings = pool_settings(
            redis_server, sim.url, tmp_path / "data", KEYS, limiter={"enabled": True, "default_rpm": 10, "window_s": 2},
        )  # fmt: skip
        busy = fingerprint(KEYS[0])
        # no in-process hold: every booking must come back as a ticket, not wait for it
        config = replace(LimiterConfig.from_settings(settings), account=busy, hold_s=0)
        booked = build_limiter(settings, redis, config=config)
        await booked.acquire(TTS_MODEL, job_id="elsewhere-0")
        for i in range(1, 150):  # ~30 s: far more than a loaded host needs for 20 jobs
            with pytest.raises(CapacityDeferred):
                await booked.acquire(TTS_MODEL, job_id=f"elsewhere-{i}")
        producer = Producer(redis, settings)
        ids = [(await producer.enqueue({"kind": "speech", "input": f"Fresh {i}."})).job_id
               for i in range(20)]  # fmt: skip
        async with running_worker(settings):
            done = [await producer.wait(i, timeout_s=60) for i in ids]
        assert {r.status for r in done} == {"succeeded"}
        assert {r.account for r in done} == {fingerprint(KEYS[1])}
