"""mimoq_desired_workers against the worker count that actually keeps the quota full.

    python bench/desired_workers.py [--workers 1,2,3,4,5,6] [--concurrency 4]
                                    [--windows 4] [--window-s 8] [--rpm 60]
                                    [--latency-median-ms 1000] [--latency-sigma 0.6]
                                    [--full 0.97] [--seed 1]

Time-compressed like bench/quota.py: MiMo's one-minute window becomes ``--window-s``
seconds for the simulator (sliding window) and the workers (``MIMOQ_LIMIT_WINDOW_S``).
For each worker count N of the sweep: a flushed Redis, a reset simulator, N fresh
``mimoq worker`` processes of ``--concurrency`` slots each, and a backlog of bulk speech
jobs deep enough that the queue never runs dry. Window 1 is the ramp-up; over windows
2..W the bench measures the share of the quota used (calls the simulator admitted over
``--rpm`` per window) and, at every second of those windows, the gauge's value, computed
by the very function every worker and ``mimoq serve`` report it with
(``read_desired_workers``) on the same Redis.

It prints one row per N (share of quota, the gauge's median and range) and then, side
by side: the smallest N whose share is at least ``--full`` of the quota, and what the
gauge said. The gauge sizes for the p90 latency, the Little's-law minimum for the mean:
the difference is the headroom it buys for the slow calls.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from _quota_fleet import Fleet, FleetSpec, stop_all
from _quota_measure import admitted, lognormal_latency_s, table
from _support import Service, default_target, run_bench
from arq.connections import ArqRedis

from mimoq.core.dialect_constants import TTS_MODEL
from mimoq.core.settings import Settings
from mimoq.producer.client import Producer
from mimoq.worker.scaling import fleet_latency_p90s, read_desired_workers

#: One second of 24 kHz mono audio per answer: the bench is about the quota, not audio.
TTS_AUDIO_BYTES = 48_000
#: z of the 90th percentile of a normal distribution (a lognormal's p90 = median e^(z σ)).
Z_P90 = 1.2816
#: Seconds between two reads of the gauge during the steady windows.
SAMPLE_EVERY_S = 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workers", default="1,2,3,4,5,6", help="worker counts to sweep")
    p.add_argument("--concurrency", type=int, default=4, help="MIMOQ_CONCURRENCY per worker")
    p.add_argument("--windows", type=int, default=4, help="windows per worker count (>= 2)")
    p.add_argument("--window-s", type=float, default=8.0, help="the compressed quota window")
    p.add_argument("--rpm", type=int, default=60, help="requests per window")
    p.add_argument("--latency-median-ms", type=float, default=1000.0)
    p.add_argument("--latency-sigma", type=float, default=0.6, help="lognormal sigma (tail)")
    p.add_argument("--full", type=float, default=0.97, help="share of the quota that is full")
    p.add_argument("--seed", type=int, default=1, help="the simulator's latency seed")
    args = p.parse_args(argv)
    if args.windows < 2:
        p.error("--windows must be at least 2 (window 1 is the ramp-up)")
    args.sweep = sorted({int(n) for n in args.workers.split(",")})
    return args


@dataclass(frozen=True)
class Point:
    """One worker count's measurement."""

    workers: int
    share: float  # of the quota, over the steady windows
    gauge: list[int]  # the gauge's values, sampled over the steady windows
    p90_s: list[float]  # the fleet's call p90 the gauge used, at the same samples

    def cells(self, concurrency: int) -> list[str]:
        return [
            str(self.workers),
            str(self.workers * concurrency),
            f"{self.share:.1%}",
            f"{statistics.median(self.gauge):g}" if self.gauge else "-",
            f"{min(self.gauge)}..{max(self.gauge)}" if self.gauge else "-",
            f"{statistics.median(self.p90_s):.2f}" if self.p90_s else "-",
        ]


def sim_flags(args: argparse.Namespace) -> list[str]:
    return [
        "--quota-rpm", str(args.rpm), "--quota-window-s", f"{args.window_s:g}",
        "--quota-algorithm", "sliding_window",
        "--latency-median-ms", f"{args.latency_median_ms:g}",
        "--latency-sigma", f"{args.latency_sigma:g}", "--seed", str(args.seed),
        "--audio-bytes", str(TTS_AUDIO_BYTES),
    ]  # fmt: skip


def settings_for(args: argparse.Namespace, redis_url: str, sim_url: str) -> Settings:
    """What the workers run with, as the gauge's reader must see it."""
    return Settings(
        redis_url=redis_url,
        mimo={"base_url": sim_url + "/v1"},
        limiter={"window_s": args.window_s, "default_rpm": args.rpm},
        worker={"concurrency": args.concurrency},
    )


async def measure(
    n: int, args: argparse.Namespace, fleet: Fleet, redis_svc: Service, sim: Service
) -> Point:
    settings = settings_for(args, redis_svc.url, sim.url)
    redis = ArqRedis.from_url(redis_svc.url)
    http = httpx.AsyncClient(base_url=sim.url, timeout=10)
    try:
        await redis.flushall()
        (await http.post("/_sim/reset")).raise_for_status()
        spec = FleetSpec(
            redis_url=redis_svc.url, mimo_base_url=settings.base_url(),
            data_dir=fleet.workdir / f"n{n}", window_s=args.window_s,
            concurrency=args.concurrency, poll_delay_s=0.05, limits=True,
            # heartbeats carry the p90 the gauge reads: beat often in compressed time
            # the limiter paces to the simulator's quota
            extra_env=(
                ("MIMOQ_HEARTBEAT_INTERVAL_S", "1"), ("MIMOQ_LIMIT_DEFAULT_RPM", str(args.rpm)),
            ),
        )  # fmt: skip
        workers = fleet.workers(n, spec, f"n{n}")
        try:
            producer = Producer(redis, settings)
            backlog = 2 * args.rpm * args.windows + 20  # twice what the quota allows
            for i in range(backlog):
                job = {"kind": "speech", "input": f"Scaling bench {i}.", "priority": "bulk"}
                await producer.enqueue(job)
            t0 = time.time()
            gauge: list[int] = []
            p90s: list[float] = []
            calls: list[int] = []
            for k in range(1, args.windows + 1):
                end = t0 + k * args.window_s
                while k > 1 and time.time() + SAMPLE_EVERY_S < end:
                    gauge.append((await read_desired_workers(redis, settings)).workers)
                    seen = await fleet_latency_p90s(redis)
                    p90s += [s for (_, model), s in seen.items() if model == TTS_MODEL]
                    # a measuring interval on the wall clock, not a stand-in for synchronization
                    await asyncio.sleep(SAMPLE_EVERY_S)
                await asyncio.sleep(max(0.0, end - time.time()))
                calls.append(admitted((await http.get("/_sim/stats")).json(), TTS_MODEL))
        finally:
            stop_all(workers)
    finally:
        await http.aclose()
        await redis.aclose()
    steady = args.windows - 1
    return Point(n, (calls[-1] - calls[0]) / (steady * args.rpm), gauge, p90s)


def describe(args: argparse.Namespace) -> str:
    target = default_target(args.window_s)
    rate = args.rpm * target / args.window_s
    median = args.latency_median_ms / 1000
    mean, _ = lognormal_latency_s(median, args.latency_sigma)
    p90 = median * 2.718281828 ** (Z_P90 * args.latency_sigma)
    return (
        f"quota: {args.rpm} requests per {args.window_s:g} s window (sliding, simulator), "
        f"limiter target {target:g}: {rate:.2f} calls/s\n"
        f"latency: lognormal, median {median:g} s, sigma {args.latency_sigma:g}: mean "
        f"{mean:.2f} s, p90 {p90:.2f} s\n"
        f"Little's law: {rate * mean:.1f} calls in flight at the mean latency "
        f"({rate * mean / args.concurrency:.1f} workers of {args.concurrency}), "
        f"{rate * p90:.1f} at the p90 ({rate * p90 / args.concurrency:.1f} workers)\n"
        f"{args.windows} windows per worker count; steady = windows 2..{args.windows}"
    )


async def main_async(args: argparse.Namespace) -> int:
    with (
        tempfile.TemporaryDirectory(prefix="mimoq-desired-") as tmp,
        Fleet(Path(tmp)) as fleet,
    ):
        print("$ python bench/desired_workers.py " + " ".join(sys.argv[1:]))
        print(describe(args), flush=True)
        redis_svc = fleet.redis()
        sim = fleet.simulator(*sim_flags(args))
        points: list[Point] = []
        for n in args.sweep:
            print(f"running {n} worker(s) ...", file=sys.stderr, flush=True)
            points.append(await measure(n, args, fleet, redis_svc, sim))
    header = ["workers", "slots", "share of quota", "gauge (median)", "gauge (range)", "p90 s"]
    print()
    print(table([header, *(p.cells(args.concurrency) for p in points)]))
    full = [p.workers for p in points if p.share >= args.full]
    said = [g for p in points for g in p.gauge]
    smallest = str(min(full)) if full else f"none up to {max(args.sweep)}"
    gauge = f"{statistics.median(said):g} (range {min(said)}..{max(said)})" if said else "-"
    best = max(points, key=lambda p: p.share)
    print(
        f"\nsmallest worker count keeping >= {args.full:.0%} of the quota: {smallest} "
        f"(highest share: {best.share:.1%} with {best.workers}); "
        f"mimoq_desired_workers said: {gauge}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_bench(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
