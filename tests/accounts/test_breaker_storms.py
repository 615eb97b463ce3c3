"""The account circuit breaker end to end: real worker processes, the simulator as MiMo.

A 402 (or 401) storm over a 200-job backlog pauses the account fleet-wide: while it is
paused the fleet sends at most two requests per probe, fails nothing and logs the pause
once; once the account is restored every job finishes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from arq.connections import ArqRedis

from mimoq.core.keypool import fingerprint
from mimoq.core.settings import Settings
from mimoq.producer.client import Producer
from mimoq.sim.sim_accounts import AccountState
from mimoq.sim.sim_config import SimConfig
from mimoq.sim.sim_server import RunningSim
from mimoq.worker.accounts.breaker import PAUSED_SET, state_key
from tests.accounts.conftest import simulator
from tests.conftest import RedisServer
from tests.support.cli import clean_env, mimoq_args
from tests.support.polling import eventually

pytestmark = [pytest.mark.redis, pytest.mark.slow]
KEY = "sk-storm-account-key-0123456789"
ACCOUNT = fingerprint(KEY)
JOBS = 200


def start_workers(n: int, env: dict[str, str], logs: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(n):
        with (logs / f"worker{i}.log").open("wb") as log:  # the child keeps its own handle
            args = mimoq_args("worker", "--metrics-port", "0")
            out = subprocess.DEVNULL
            procs.append(subprocess.Popen(args, env=env, cwd=logs, stdout=out, stderr=log))
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sim_requests(sim: RunningSim) -> int:
    """Requests the simulator has received for the account (counted on arrival)."""
    return int(sim.app.accounts.describe()["requests"].get(ACCOUNT, 0))


async def results(redis: ArqRedis, ids: list[str]) -> list[dict[str, object]]:
    raws = await redis.mget([f"mimoq:result:{i}" for i in ids])
    return [json.loads(r) for r in raws if r is not None]


@pytest.mark.parametrize("storm", [AccountState.INSUFFICIENT_FUNDS, AccountState.REVOKED])
async def test_a_storm_pauses_the_account_and_loses_nothing(
    storm: AccountState, redis_server: RedisServer, redis: ArqRedis, tmp_path: Path
) -> None:
    with simulator(SimConfig(api_keys=(KEY,), latency_ms=5)) as sim:
        env = clean_env(
            REDIS_URL=redis_server.url, MIMO_API_KEY=KEY, MIMO_BASE_URL=sim.url,
            MIMOQ_DATA_DIR=str(tmp_path / "data"), MIMOQ_CONCURRENCY="4",
            MIMOQ_LIMITS_ENABLED="false", MIMOQ_POLL_DELAY_S="0.01",
            MIMOQ_BACKOFF_BASE_S="0.01", MIMOQ_BACKOFF_MAX_S="0.05",
            MIMOQ_ACCOUNT_PROBE_BASE_S="0.1", MIMOQ_ACCOUNT_PROBE_MAX_S="0.4",
            MIMOQ_HEARTBEAT_INTERVAL_S="1", MIMOQ_LOG_LEVEL="INFO",
        )  # fmt: skip
        producer = Producer(redis, Settings(redis_url=redis_server.url, mimo={"key": KEY}))
        ids = [
            (await producer.enqueue({"kind": "speech", "input": f"Sentence {i}."})).job_id
            for i in range(JOBS)
        ]
        workers = start_workers(2, env, tmp_path)
        try:
            await eventually(
                lambda: _count(redis, ids, 10), what="ten jobs finished", timeout_s=120
            )
            sim.app.accounts.set_state(ACCOUNT, storm)
            await eventually(
                lambda: _is_member(redis, ACCOUNT), what="the account to be paused", timeout_s=60
            )
            sent_at_pause = sim_requests(sim)
            await eventually(lambda: _probes(redis, 6), what="six probes", timeout_s=60)
            sent = sim_requests(sim) - sent_at_pause
            probes = int(await redis.hget(state_key(ACCOUNT), "probes") or 0)
            # Requests in flight when the breaker opened may land after it: still at most
            # two requests per probe while paused, against one per queued job before.
            assert sent <= 2 * probes, (sent, probes)
            finished = await results(redis, ids)
            assert not [r for r in finished if r["status"] == "failed"]
            assert len(finished) < JOBS  # the backlog is kept, not burnt
            sim.app.accounts.set_state(ACCOUNT, AccountState.OK)
            await eventually(
                lambda: _count(redis, ids, JOBS), what="every job finished", timeout_s=120
            )
        finally:
            stop_workers(workers)
        finished = await results(redis, ids)
        assert [r["status"] for r in finished] == ["succeeded"] * JOBS
        assert {r["account"] for r in finished} == {ACCOUNT}
        assert not await redis.sismember(PAUSED_SET, ACCOUNT)  # resumed by a probe
        logs = "".join(p.read_text() for p in tmp_path.glob("worker*.log"))
        paused_lines = [line for line in logs.splitlines() if '"account.paused"' in line]
        assert len(paused_lines) == 1, paused_lines  # once for the fleet, not per job
        assert json.loads(paused_lines[0])["account"] == ACCOUNT
        assert KEY not in logs


async def _count(redis: ArqRedis, ids: list[str], n: int) -> bool:
    return sum(1 for r in await redis.mget([f"mimoq:result:{i}" for i in ids]) if r) >= n


async def _is_member(redis: ArqRedis, account: str) -> bool:
    return bool(await redis.sismember(PAUSED_SET, account))


async def _probes(redis: ArqRedis, n: int) -> bool:
    return int(await redis.hget(state_key(ACCOUNT), "probes") or 0) >= n
