"""A SIGKILLed ``mimoq worker``'s jobs run again within ~3 heartbeats, not after the timeout."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.core.results import read_result
from mimoq.producer.client import Producer
from mimoq.sim.faults import Fault
from mimoq.sim.sim_server import RunningSim
from tests.conftest import RedisServer
from tests.e2e.conftest import e2e_settings
from tests.ops.test_shutdown import spawn  # noqa: F401  (the worker-process fixture)
from tests.support.polling import eventually

pytestmark = [pytest.mark.redis, pytest.mark.slow]

INTERVAL_S = 0.5


async def _beats(redis: ArqRedis) -> int:
    return len([k async for k in redis.scan_iter(match=wire.WORKER_HEARTBEAT_PREFIX + "*")])


async def test_sigkilled_workers_jobs_run_again_within_heartbeats_not_the_job_timeout(
    redis: ArqRedis,
    spawn: Any,  # noqa: F811  (the imported fixture, requested by name)
    sim: RunningSim,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    producer = Producer(redis, e2e_settings(redis_server, sim, tmp_path / "data"))
    env = {
        "MIMOQ_HEARTBEAT_INTERVAL_S": str(INTERVAL_S),
        "MIMOQ_JOB_TIMEOUT_S": "600",
        # The limiter gives a dead worker's slots back on its own (lease) clock: off here,
        # so the time measured is orphan recovery alone.
        "MIMOQ_LIMITS_ENABLED": "false",
    }
    victim = spawn(**env)
    await eventually(lambda: _beats(redis), 60, "the first worker's heartbeat")
    # Three slow jobs in flight on the victim, one fast job that finishes before the kill.
    sim.state.add_fault(Fault(kind="latency", ms=60_000, match="slow orphan", times=3))
    fast = await producer.enqueue({"kind": "speech", "input": "quick one"})
    assert (await producer.wait(fast.job_id, timeout_s=60)).status == "succeeded"
    slow = [
        (await producer.enqueue({"kind": "speech", "input": f"slow orphan {i}"})).job_id
        for i in range(3)
    ]

    async def all_in_flight() -> bool:
        owners = await redis.hmget(wire.INFLIGHT_KEY, slow)
        calls = int(sim.state.stats()["in_flight"])
        return all(owners) and len(set(owners)) == 1 and calls == 3

    await eventually(all_in_flight, 60, "the victim's three calls to be at MiMo")
    survivor = spawn(**env)
    await eventually(lambda: _two_beats(redis), 60, "the survivor's heartbeat")
    requests_before = int(sim.state.stats()["total_requests"])

    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(10)
    killed = time.monotonic()

    async def rerun_started() -> bool:
        return int(sim.state.stats()["total_requests"]) >= requests_before + 3

    await eventually(rerun_started, 60, "the orphaned jobs to reach MiMo again")
    recovered_s = time.monotonic() - killed
    results = [await producer.wait(job_id, timeout_s=60) for job_id in slow]
    print(f"orphan recovery after SIGKILL: {recovered_s:.2f} s = {recovered_s / INTERVAL_S:.1f} "
          f"heartbeat intervals (MIMOQ_JOB_TIMEOUT_S=600: arq alone would wait ~615 s)")  # fmt: skip

    assert [r.status for r in results] == ["succeeded"] * 3
    assert [r.tries for r in results] == [2, 2, 2]  # the killed try counted
    # ~3 intervals nominal; the margin is for a loaded host, still 50x under the timeout
    assert recovered_s < 3 * INTERVAL_S + 10, recovered_s
    assert (await read_result(redis, fast.job_id)) is not None
    # The finished job was not run again: 1 fast + 3 killed + 3 re-runs, nothing more.
    assert int(sim.state.stats()["total_requests"]) == requests_before + 3 == 1 + 3 + 3

    async def nothing_in_flight() -> bool:  # the survivor forgets its jobs on its next poll
        return not await redis.hgetall(wire.INFLIGHT_KEY)

    await eventually(nothing_in_flight, 60, "the in-flight record to empty")
    assert survivor.proc.poll() is None


async def _two_beats(redis: ArqRedis) -> bool:
    return await _beats(redis) >= 2
