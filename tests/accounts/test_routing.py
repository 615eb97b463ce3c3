"""Routing across a key pool: every account serves, a fan-out job stays on one account."""

from __future__ import annotations

from pathlib import Path

import pytest
from arq.connections import ArqRedis

from mimoq.core.keypool import fingerprint
from mimoq.producer.client import Producer
from mimoq.sim.config import SimConfig, quota_from_options
from mimoq.worker.accounts.routing import affinity
from tests.accounts.conftest import pool_settings, simulator
from tests.conftest import RedisServer
from tests.e2e.conftest import running_worker

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
    # backlog is served by both at once, and neither is ever pushed past its quota.
    quota = quota_from_options(rpm={"*": 10}, window_s=2)
    config = SimConfig(api_keys=tuple(KEYS), per_key_quota=True, quota=quota)
    with simulator(config) as sim:
        settings = pool_settings(
            redis_server, sim.url, tmp_path / "data", KEYS, limits_enabled=True,
            limit_default_rpm=10, limit_window_s=2,
        )  # fmt: skip
        producer = Producer(redis, settings)
        ids = [(await producer.enqueue({"kind": "speech", "input": f"Quota {i}."})).job_id
               for i in range(40)]  # fmt: skip
        async with running_worker(settings):
            done = [await producer.wait(i, timeout_s=120) for i in ids]
        assert {r.status for r in done} == {"succeeded"}
        assert {r.account for r in done} == {fingerprint(k) for k in KEYS}
        assert sim.state.stats()["responses"].get("429", 0) == 0
