"""Nothing is lost when a worker is killed or Redis restarts."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.producer.client import Producer
from mimoq.sim.faults import Fault
from mimoq.sim.sim_server import RunningSim
from tests.conftest import RedisServer, start_redis_server
from tests.e2e.conftest import API_KEY, e2e_settings, running_worker
from tests.support.polling import eventually

pytestmark = [pytest.mark.redis, pytest.mark.slow]


async def test_a_killed_workers_job_is_run_again_once(
    redis_server: RedisServer, sim: RunningSim, tmp_path: Path, redis: ArqRedis
) -> None:
    settings = e2e_settings(redis_server, sim, tmp_path)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MIMO", "REDIS_URL"))},
        "MIMO_API_KEY": API_KEY,
        "MIMO_BASE_URL": sim.url,
        "REDIS_URL": redis_server.url,
        "MIMOQ_DATA_DIR": str(tmp_path),
        "MIMOQ_CALLBACK_ALLOW_NETWORKS": "127.0.0.0/8",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "MIMOQ_POLL_DELAY_S": "0.01",
        "MIMOQ_METRICS_PORT": "0",  # the default port is one per machine, not per test
    }
    # The first call hangs long enough for the worker to be killed in the middle of it.
    sim.state.add_fault(Fault(kind="latency", ms=30_000, match="survive"))
    worker = subprocess.Popen(
        [sys.executable, "-m", "mimoq.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        producer = Producer(redis, settings)
        await producer.enqueue({"kind": "speech", "input": "survive a kill", "id": "kill-1"})
        # A generous deadline: a worker process starting on a loaded host (a shared CI
        # runner, the whole suite at once) took over 20 s to make its first call.
        await eventually(
            lambda: asyncio.to_thread(lambda: sim.state.stats()["in_flight"] == 1),
            timeout_s=90,
            what="the MiMo call",
        )
        assert await redis.exists(wire.in_progress_key("kill-1"))
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)

    # The job is still queued; arq re-runs it when its in-progress key expires
    # (job timeout + 15 s). Expire it now instead of waiting.
    assert await redis.zscore(wire.QUEUE_NAME, "kill-1") is not None
    assert await redis.get(wire.result_key("kill-1")) is None
    await redis.delete(wire.in_progress_key("kill-1"))
    async with running_worker(settings):
        result = await producer.wait("kill-1", timeout_s=60)
    assert result.status == "succeeded"
    assert result.tries == 2  # the killed try counted
    assert [p.name for p in (tmp_path / "speech").iterdir()] == ["kill-1.wav"]  # no temp file left


async def test_a_redis_restart_loses_no_job(sim: RunningSim, tmp_path: Path) -> None:
    server = start_redis_server()
    try:
        settings = e2e_settings(server, sim, tmp_path)
        redis = ArqRedis.from_url(server.url)
        ids = [
            (
                await Producer(redis, settings).enqueue({"kind": "speech", "input": f"job {i}"})
            ).job_id
            for i in range(5)
        ]
        await redis.aclose()

        server.stop()  # AOF on, as in docker-compose.yml
        server.start_again()

        redis = ArqRedis.from_url(server.url)
        producer = Producer(redis, settings)
        async with running_worker(settings):
            results = [await producer.wait(job_id, timeout_s=20) for job_id in ids]
        await redis.aclose()
        assert [r.status for r in results] == ["succeeded"] * 5
    finally:
        server.close()
