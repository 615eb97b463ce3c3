"""Redis stopped for 5 s in the middle of a batch: workers wait it out, nothing is lost."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.core.redis_retry import client_options
from mimoq.producer.client import Producer
from mimoq.sim.faults import Fault
from mimoq.sim.sim_server import RunningSim
from tests.conftest import start_redis_server
from tests.e2e.conftest import API_KEY, e2e_settings

pytestmark = [pytest.mark.redis, pytest.mark.slow]

JOBS = 40
OUTAGE_S = 5.0  # the stimulus itself: how long Redis is gone


async def eventually(check: object, what: str, timeout_s: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _records(log: Path) -> list[dict[str, object]]:
    lines = log.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


async def test_a_5s_redis_outage_mid_batch_loses_nothing_and_workers_stay_up(
    sim: RunningSim, tmp_path: Path
) -> None:
    server = start_redis_server()
    workers: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        settings = e2e_settings(server, sim, tmp_path / "data", worker={"redis_retry_s": 60})
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("MIMO", "REDIS_URL"))},
            "MIMO_API_KEY": API_KEY,
            "MIMO_BASE_URL": sim.url,
            "REDIS_URL": server.url,
            "MIMOQ_DATA_DIR": str(tmp_path / "data"),
            "MIMOQ_POLL_DELAY_S": "0.05",
            "MIMOQ_HEARTBEAT_INTERVAL_S": "0.5",  # beats lapse during the outage
            "MIMOQ_METRICS_PORT": "0",
            "MIMOQ_LIMITS_ENABLED": "false",
            "MIMOQ_CONCURRENCY": "4",
            "MIMOQ_REDIS_RETRY_S": "60",
            "MIMOQ_LOG_LEVEL": "INFO",
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        }
        sim.state.add_fault(Fault(kind="latency", ms=300, times=None))
        for n in range(2):
            log = tmp_path / f"worker-{n}.log"
            with log.open("wb") as sink:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "mimoq.cli", "worker"],
                    env=env, stdout=sink, stderr=subprocess.STDOUT,
                )  # fmt: skip
            workers.append((proc, log))

        redis = ArqRedis.from_url(server.url, **client_options(60))
        producer = Producer(redis, settings)
        ids = [
            (await producer.enqueue({"kind": "speech", "input": f"outage job {i}"})).job_id
            for i in range(JOBS)
        ]

        async def some_done_some_running() -> bool:
            done = await redis.exists(*[wire.result_key(i) for i in ids])
            return done >= 8 and int(sim.state.stats()["in_flight"]) >= 1

        await eventually(some_done_some_running, "the batch to be under way")
        server.stop()
        await asyncio.sleep(OUTAGE_S)
        server.start_again()

        results = [await producer.wait(job_id, timeout_s=90) for job_id in ids]
        calls = int(sim.state.stats()["total_requests"])
        await redis.aclose()
        print(f"5 s Redis outage mid-batch: {JOBS} jobs, lost 0, "
              f"duplicate MiMo calls {calls - JOBS}")  # fmt: skip

        assert [r.status for r in results] == ["succeeded"] * JOBS
        assert calls == JOBS  # no MiMo call was repeated
        for proc, log in workers:
            assert proc.poll() is None, log.read_text()[-3000:]  # alive, not exit 1
            records = _records(log)
            events = [r["event"] for r in records]
            assert events.count("redis.unavailable") == 1, events
            assert events.count("redis.restored") == 1, events
            [back] = [r for r in records if r["event"] == "redis.restored"]
            assert float(back["outage_s"]) >= OUTAGE_S - 1  # type: ignore[arg-type]
            assert "Traceback" not in log.read_text()
    finally:
        for proc, _ in workers:
            proc.terminate()
            proc.wait(30)
        server.stop()
