"""A Sentinel failover in the middle of a batch: REDIS_URL=redis+sentinel://, real processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis as sync_redis

from mimoq.core import sentinel as sentinel_client
from mimoq.core import wire
from mimoq.core.connections import connect
from mimoq.core.sentinel import SentinelTarget, parse
from mimoq.producer.client import Producer
from mimoq.sim.faults import Fault
from mimoq.sim.sim_server import RunningSim
from tests.conftest import free_port
from tests.e2e.conftest import API_KEY, e2e_settings

pytestmark = [pytest.mark.redis, pytest.mark.slow]

JOBS = 40
IN_FLIGHT_MAX = 2 * 4  # two workers, concurrency 4: the most a failover can repeat


def test_sentinel_urls_parse() -> None:
    assert parse("redis+sentinel://h1:26379,h2:26380/mymaster/2") == SentinelTarget(
        (("h1", 26379), ("h2", 26380)), "mymaster", 2
    )
    assert parse("redis+sentinel://u:p%40ss@h:1/svc") == SentinelTarget(
        (("h", 1),), "svc", 0, "u", "p@ss"
    )
    for bad in ("redis+sentinel://h:1", "redis+sentinel:///svc", "redis+sentinel://h/svc"):
        with pytest.raises(Exception, match="redis\\+sentinel://"):
            parse(bad)


def _wait(check: object, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _ask(port: int, question: Callable[[sync_redis.Redis], object]) -> object:
    """What a server answers, or None while it cannot (starting, syncing, gone)."""
    client = sync_redis.Redis(port=port, socket_timeout=2)
    try:
        return question(client)
    except sync_redis.RedisError:
        return None
    finally:
        client.close()


def _replica_synced(port: int) -> bool:
    info = _ask(port, lambda c: c.info("replication"))
    return isinstance(info, dict) and info.get("master_link_status") == "up"


def _primary_port(sentinel: int) -> object:
    address = _ask(sentinel, lambda c: c.sentinel_get_master_addr_by_name("mymaster"))
    return address[1] if isinstance(address, tuple) else None


@pytest.fixture
def sentinel_setup(tmp_path: Path) -> Iterator[tuple[int, int, int, list[subprocess.Popen[bytes]]]]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    primary, replica, sentinel = free_port(), free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> None:
        procs.append(
            subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )

    for port, extra in ((primary, []), (replica, ["--replicaof", "127.0.0.1", str(primary)])):
        data = tmp_path / f"redis-{port}"
        data.mkdir()
        start("--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--save", "",
              "--appendonly", "yes", *extra)  # fmt: skip
    _wait(lambda: _replica_synced(replica), "the replica to sync")
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {sentinel}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {primary} 1\n"
        "sentinel down-after-milliseconds mymaster 1000\n"
        "sentinel failover-timeout mymaster 3000\n"
    )
    start(str(conf), "--sentinel")
    _wait(
        lambda: _ask(sentinel, lambda c: c.sentinel_slaves("mymaster")),
        "Sentinel to see the replica",
    )
    yield primary, replica, sentinel, procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def test_a_failover_mid_batch_loses_no_job_and_workers_follow_the_new_primary(
    sentinel_setup: tuple[int, int, int, list[subprocess.Popen[bytes]]],
    sim: RunningSim,
    tmp_path: Path,
) -> None:
    _primary, replica, sentinel, procs = sentinel_setup
    url = f"redis+sentinel://127.0.0.1:{sentinel}/mymaster/0"
    at_sentinel = SimpleNamespace(url=url)  # e2e_settings reads only .url of its server
    settings = e2e_settings(at_sentinel, sim, tmp_path / "data")  # type: ignore[arg-type]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MIMO", "REDIS_URL"))},
        "MIMO_API_KEY": API_KEY, "MIMO_BASE_URL": sim.url, "REDIS_URL": url,
        "MIMOQ_DATA_DIR": str(tmp_path / "data"), "MIMOQ_POLL_DELAY_S": "0.05",
        "MIMOQ_HEARTBEAT_INTERVAL_S": "0.5", "MIMOQ_METRICS_PORT": "0",
        "MIMOQ_LIMITS_ENABLED": "false", "MIMOQ_CONCURRENCY": "4", "MIMOQ_REDIS_RETRY_S": "60",
        # a finish lost with the old primary leaves an in-progress mark: bound its wait
        "MIMOQ_JOB_TIMEOUT_S": "30", "MIMOQ_LOG_LEVEL": "INFO",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }  # fmt: skip
    sim.state.add_fault(Fault(kind="latency", ms=300, times=None))
    workers = []
    for n in range(2):
        log = tmp_path / f"worker-{n}.log"
        with log.open("wb") as sink:
            workers.append(
                subprocess.Popen([sys.executable, "-m", "mimoq.cli", "worker"], env=env,
                                 stdout=sink, stderr=subprocess.STDOUT)
            )  # fmt: skip
    procs.extend(workers)
    redis = connect(settings, ride_out_outages=True)
    producer = Producer(redis, settings)
    try:
        ids = [
            (await producer.enqueue({"kind": "speech", "input": f"failover job {i}"})).job_id
            for i in range(JOBS)
        ]
        deadline = time.monotonic() + 60
        while await redis.exists(*[wire.result_key(i) for i in ids]) < 8:
            assert time.monotonic() < deadline, "the batch did not get under way"
            await asyncio.sleep(0.05)
        procs[0].kill()  # the primary, mid-batch
        await asyncio.to_thread(
            _wait,
            lambda: _primary_port(sentinel) == replica,
            "Sentinel to promote the replica",
        )
        results = {}
        for job_id in ids:
            with contextlib.suppress(TimeoutError):  # counted as lost below
                results[job_id] = await producer.wait(job_id, timeout_s=45)
        calls = int(sim.state.stats()["total_requests"])
        lost = JOBS - len(results)
        print(f"Sentinel failover mid-batch: {JOBS} jobs, lost {lost}, "
              f"duplicate MiMo calls {calls - JOBS}")  # fmt: skip
        assert lost == 0
        assert all(r.status == "succeeded" for r in results.values())
        assert 0 <= calls - JOBS <= IN_FLIGHT_MAX
        assert all(w.poll() is None for w in workers), "a worker died in the failover"
    finally:
        await sentinel_client.aclose(redis)
