"""What waiting for a result costs Redis, and how soon the waiter hears: polling against
being told (``Producer.wait``), side by side in one run.

    python bench/wait_cost.py [--waits 200] [--job-s 2.0] [--rounds 2]

One private redis-server. Each phase starts ``--waits`` concurrent waits on jobs that
"finish" ``--job-s`` seconds later, at random (the bench writes each result through the
finish path's own ``write_result_safely``, which also publishes), and counts the commands
the waits sent (``INFO commandstats``, less the bench's own writes) and the delay from each
result's write to its wait's return.

- ``polling``: the wait as it was (read the record every 20 ms, slowing to 0.5 s);
- ``notified``: ``Producer.wait`` (subscribe, one read, woken by the finish path).

Also: the time ``import mimoq`` takes against importing the producer it exports, each in a
fresh interpreter (``-X importtime``), the best of ``--rounds``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _support import Services, run_bench
from arq.connections import ArqRedis

from mimoq.core.jobs import JobResult
from mimoq.core.results import read_result, write_result_safely
from mimoq.core.settings import Settings
from mimoq.producer.client import Producer

Wait = Callable[[str], Awaitable[JobResult]]
#: What the bench itself sends: the result writes and its own INFO reads.
OWN = frozenset({"set", "publish", "info", "config|resetstat", "config", "flushall"})


async def polling_wait(redis: ArqRedis, job_id: str) -> JobResult:
    """The wait before notifications (mimoq 0.1's ``Producer.wait``), as the baseline."""
    interval = 0.02
    while True:
        result = await read_result(redis, job_id)
        if result is not None:
            return result
        await asyncio.sleep(interval)
        interval = min(interval * 1.5, 0.5)


async def commands(redis: ArqRedis) -> dict[str, int]:
    stats: dict[str, Any] = await redis.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


async def phase(redis: ArqRedis, wait: Wait, waits: int, job_s: float) -> dict[str, Any]:
    await redis.flushall()
    await redis.config_resetstat()
    ids = [f"job-{i}" for i in range(waits)]
    written: dict[str, float] = {}
    heard: dict[str, float] = {}

    async def one(job_id: str) -> None:
        await wait(job_id)
        heard[job_id] = time.monotonic()

    async def finish(job_id: str) -> None:
        await asyncio.sleep(random.uniform(0.2, job_s))
        result = JobResult(id=job_id, kind="speech", status="succeeded", finished_at=time.time())
        written[job_id] = time.monotonic()
        await write_result_safely(redis, result, ttl_s=600)

    await asyncio.gather(*(one(i) for i in ids), *(finish(i) for i in ids))
    sent = {k: v for k, v in (await commands(redis)).items() if k not in OWN}
    delays = sorted(heard[i] - written[i] for i in ids)
    return {
        "per_wait": sum(sent.values()) / waits,
        "by_name": sent,
        "p50_ms": 1000 * statistics.median(delays),
        "p99_ms": 1000 * delays[int(0.99 * (len(delays) - 1))],
    }


def import_ms(module: str, rounds: int) -> float:
    """Cumulative import time of ``module`` in a fresh interpreter, best of ``rounds``."""
    best = float("inf")
    for _ in range(rounds):
        run = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"import {module}"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        line = [x for x in run.stderr.splitlines() if x.rstrip().endswith(f"| {module}")][-1]
        best = min(best, int(line.split("|")[1]) / 1000)
    return best


async def main(args: argparse.Namespace) -> int:
    random.seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp, Services(Path(tmp)) as services:
        redis = ArqRedis.from_url(services.redis().url, max_connections=None)
        try:
            producer = Producer(redis, Settings())
            old = await phase(redis, lambda i: polling_wait(redis, i), args.waits, args.job_s)
            new = await phase(redis, producer.wait, args.waits, args.job_s)
            await producer.aclose()
        finally:
            await redis.aclose()
    print(f"{args.waits} concurrent waits, jobs finishing within {args.job_s:g} s")
    print(f"{'':10} {'commands/wait':>14} {'p50 heard':>10} {'p99 heard':>10}")
    for name, row in (("polling", old), ("notified", new)):
        print(f"{name:10} {row['per_wait']:>14.1f} {row['p50_ms']:>8.1f}ms {row['p99_ms']:>8.1f}ms")
    print(f"commands per wait: {old['per_wait'] / new['per_wait']:.1f}x fewer notified")
    print(f"  polling:  {old['by_name']}\n  notified: {new['by_name']}")
    bare, producer_ms = (
        import_ms("mimoq", args.rounds),
        import_ms("mimoq.producer.client", args.rounds),
    )
    print(f"import mimoq: {bare:.1f} ms; import mimoq.producer.client: {producer_ms:.1f} ms "
          f"({producer_ms / bare:.0f}x: the public names load on first use)")  # fmt: skip
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--waits", type=int, default=200)
    parser.add_argument("--job-s", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    sys.exit(run_bench(main(parser.parse_args())))
