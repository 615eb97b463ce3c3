"""A run's ETA end to end: a real worker, the limiter's window compressed through settings
(2 s), another tenant's backlog competing in the bulk lane. No clock is injected."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

import pytest
from arq.connections import ArqRedis

from mimoq.core import runs, wire
from mimoq.sim.sim_server import RunningSim
from mimoq.worker.run_progress import read_progress
from tests.conftest import RedisServer
from tests.e2e.conftest import e2e_settings, running_worker

pytestmark = [pytest.mark.redis, pytest.mark.slow]
RUN_JOBS, RIVAL_JOBS = 60, 30


async def enqueue(redis: ArqRedis, job_id: str, tenant: str, run: str | None = None) -> None:
    job: dict[str, object] = {"kind": "speech", "input": f"eta {job_id}", "priority": "bulk",
                              "tenant": tenant}  # fmt: skip
    if run:
        job["run"] = run
    script = wire.enqueue_script()
    assert await redis.eval(script, 4, *wire.enqueue_keys(job_id), job_id, json.dumps(job)) == 1


async def test_the_eta_counts_the_competitor_and_tracks_the_real_end(
    redis_server: RedisServer, redis: ArqRedis, sim: RunningSim, tmp_path: Path
) -> None:
    settings = e2e_settings(
        redis_server, sim, tmp_path / "data", limiter={"enabled": True, "window_s": 2, "default_rpm": 30},
    )  # fmt: skip
    pace = 30 * settings.limiter.target / 2  # the quota's grants per second
    for i in range(RIVAL_JOBS):
        await enqueue(redis, f"b{i}", "rival")
    await runs.begin(redis, "eta-run", tenant="mine", priority="bulk")
    for i in range(RUN_JOBS):
        await enqueue(redis, f"a{i}", "mine", "eta-run")
    await runs.seal(redis, "eta-run")
    samples: list[tuple[float, int, float | None, float | None]] = []
    async with running_worker(settings):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            progress = await read_progress(redis, settings, "eta-run")
            assert progress is not None
            if progress.ended:
                break
            estimate = progress.estimate
            samples.append((time.time(), progress.record.done, estimate.eta_s, estimate.eta_at))
            await asyncio.sleep(0.2)  # a sampling interval, not a stand-in for a condition
        else:
            pytest.fail("the run did not end in 120 s")
    ended = progress.record.ended_at
    assert ended is not None
    scored = [(t, done, eta_s, at) for t, done, eta_s, at in samples
              if done >= RUN_JOBS // 10 and at is not None and ended - t > 1.0]  # fmt: skip
    assert len(scored) >= 5, samples
    # While the rival still has a backlog, the run gets about half the lane: its ETA says
    # so (well above what the quota alone would give its remaining jobs).
    _, done, eta_s, _ = scored[0]
    assert eta_s is not None and eta_s >= 1.2 * (RUN_JOBS - done) / pace, scored[0]
    # And it tracks the real end: the median error over the time really left is small.
    errors = [abs(at - ended) / (ended - t) for t, _, _, at in scored]
    assert statistics.median(errors) <= 0.25, errors
