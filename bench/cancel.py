"""What a cancel costs (docs/cancel.md): queued runs of two sizes beside a big backlog, and
calls in flight, side by side in one run.

    python bench/cancel.py [--jobs 10000] [--backlog 20000] [--inflight 5]

One private redis-server, counted with ``INFO commandstats`` (commands inside scripts
included), reset before each cancel:

- ``queued``: a run of ``--jobs`` bulk jobs of one tenant waits for admission (no worker);
  ``mimoq batch cancel``'s ``cancel_jobs_of_run`` withdraws it and records every job as cancelled
  (result, run counters). Measured: wall time, Redis commands per cancelled job. The same
  for a run a tenth that size, and for the full run again with ``--backlog`` jobs of another
  tenant queued beside it: if the cost is O(jobs cancelled), not O(queue), the commands per
  job are the same in all three.
- ``in flight``: a ``mimoq worker`` process sends one job at a time to ``mimoq sim`` answering
  after 6 s; once the call is in the simulator, ``cancel_jobs``; measured: cancel returned
  → the simulator saw the connection close (its in-flight gauge back to 0), and → the
  cancelled record written.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import redis as sync_redis
from _support import Services, run_bench
from redis.asyncio import Redis

from mimoq.core import wire
from mimoq.core.settings import Settings
from mimoq.producer.cancel import cancel_jobs, cancel_jobs_of_run

TTS = "mimo-v2.5-tts"


def commandstats(client: sync_redis.Redis) -> Counter[str]:
    stats = client.info("commandstats")
    return Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()})


async def enqueue_many(redis: Redis, ids: list[str], *, tenant: str, run: str | None) -> None:
    script = redis.register_script(wire.enqueue_script())
    for start in range(0, len(ids), 1000):
        async with redis.pipeline(transaction=False) as pipe:
            for job_id in ids[start : start + 1000]:
                job: dict[str, Any] = {
                    "kind": "speech", "input": f"line {job_id}", "priority": "bulk",
                    "tenant": tenant,
                }  # fmt: skip
                if run:
                    job["run"] = run
                await script(
                    keys=wire.enqueue_keys(job_id), args=[job_id, wire.dumps(job)], client=pipe
                )
            await pipe.execute()


async def queued_case(url: str, settings: Settings, n: int, backlog: int) -> dict[str, Any]:
    redis = Redis.from_url(url)
    sync = sync_redis.Redis.from_url(url)
    sync.flushall()
    run = f"run-{n}-{backlog}"
    await enqueue_many(redis, [f"{run}-{i}" for i in range(n)], tenant="acme", run=run)
    if backlog:
        await enqueue_many(redis, [f"other-{i}" for i in range(backlog)], tenant="bolt", run=None)
    sync.config_resetstat()
    started = time.perf_counter()
    answers = await cancel_jobs_of_run(redis, run, settings=settings)
    took = time.perf_counter() - started
    stats = commandstats(sync)
    stats.pop("config|resetstat", None)
    cancelled = sum(1 for a in answers if a.status.value == "cancelled")
    await redis.aclose()
    sync.close()
    assert cancelled == n, f"{cancelled} of {n} cancelled"
    total = sum(stats.values())
    return {
        "jobs": n,
        "backlog": backlog,
        "s": took,
        "per_job": total / n,
        "top": stats.most_common(6),
    }


async def inflight_case(
    url: str, settings: Settings, sim_url: str, count: int
) -> list[tuple[float, float]]:
    redis = Redis.from_url(url)
    script = redis.register_script(wire.enqueue_script())
    out: list[tuple[float, float]] = []
    async with httpx.AsyncClient(base_url=sim_url) as http:

        async def sim_in_flight() -> int:
            return int((await http.get("/_sim/stats")).json()["in_flight"])

        for i in range(count):
            job_id = f"slow-{i}"
            job = {"kind": "speech", "input": f"slow {i}"}
            await script(keys=wire.enqueue_keys(job_id), args=[job_id, wire.dumps(job)])
            while await sim_in_flight() == 0:
                await asyncio.sleep(0.005)
            asked = time.perf_counter()
            await cancel_jobs(redis, [job_id], settings=settings)
            returned = time.perf_counter()
            while await sim_in_flight() > 0:
                await asyncio.sleep(0.002)
            closed = time.perf_counter()
            while not await redis.exists(wire.result_key(job_id)):
                await asyncio.sleep(0.002)
            recorded = time.perf_counter()
            out.append((closed - returned, recorded - asked))
    await redis.aclose()
    return out


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp, Services(Path(tmp)) as services:
        redis_url = services.redis().url
        settings = Settings(redis_url=redis_url, storage={"data_dir": Path(tmp) / "data"})
        print("queued: cancelling one tenant's run (bulk, waiting), backlog of another beside it")
        print(f"{'jobs':>7} {'backlog':>8} {'seconds':>8} {'cmds/job':>9}  top commands")
        for n, backlog in ((args.jobs // 10, 0), (args.jobs, 0), (args.jobs, args.backlog)):
            row = await queued_case(redis_url, settings, n, backlog)
            top = ", ".join(f"{k} {v / n:.2f}" for k, v in row["top"])
            print(f"{n:>7} {backlog:>8} {row['s']:>8.3f} {row['per_job']:>9.2f}  {top}")
        sync_redis.Redis.from_url(redis_url).flushall()  # the backlog would be sent too
        sim = services.simulator("--latency-ms", "6000")
        worker_env = {
            "REDIS_URL": redis_url, "MIMO_API_KEY": "sk-bench", "MIMO_BASE_URL": sim.url + "/v1",
            "MIMOQ_DATA_DIR": str(Path(tmp) / "data"), "MIMOQ_POLL_DELAY_S": "0.05",
            "PATH": "/usr/bin:/bin",
        }  # fmt: skip
        services._spawn("worker", [sys.executable, "-m", "mimoq.cli", "worker"], "", env=worker_env)
        rows = await inflight_case(redis_url, settings, sim.url, args.inflight)
        closed = [r[0] * 1000 for r in rows]
        recorded = [r[1] * 1000 for r in rows]
        print(f"\nin flight ({args.inflight} calls of 6 s): cancel returned -> connection closed "
              f"median {statistics.median(closed):.0f} ms, max {max(closed):.0f} ms; "
              f"cancel asked -> cancelled record median {statistics.median(recorded):.0f} ms, "
              f"max {max(recorded):.0f} ms")  # fmt: skip
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--inflight", type=int, default=5)
    return run_bench(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
