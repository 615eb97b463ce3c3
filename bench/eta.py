"""ETA error over a run's life, alone and with another tenant's backlog competing.

    python bench/eta.py [--window-s 6] [--rpm 100] [--jobs 400] [--competitor 200]
                        [--workers 2] [--latency-median-ms 600] [--latency-sigma 0.3]

MiMo's one-minute quota compressed 10x (``--window-s 6``) for the simulator and the real
``mimoq worker`` processes alike. A run of ``--jobs`` bulk jobs of tenant ``a`` (the ``run``
field, begun and sealed as ``mimoq batch`` does) is enqueued; in the "competing" scenario
tenant ``b``'s backlog of ``--competitor`` bulk jobs is enqueued just before it. While it
runs, the run's ETA is read from Redis every quarter second, side by side with two
baselines: the run's own past rate (remaining / its finishes per second so far), and the
quota alone (remaining / the quota's pace, blind to other tenants). Once the run has ended,
each sample taken after 10 % of the run was done is scored as
``|eta_at - ended_at| / (ended_at - t)``: the error over the time that was really left.
Target: every ETA within 15 % with a competitor. In a run's last seconds the time left is
a few call latencies, whose own spread (lognormal, sigma 0.3 at a 600 ms median: about 0.2 s)
no estimate can know in advance; there the error is also printed in seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from _quota_fleet import Fleet, FleetSpec, stop_all
from _quota_measure import concurrency_per_worker, lognormal_latency_s, table
from _support import default_target, run_bench
from arq.connections import ArqRedis
from scheduling import enqueue_all

from mimoq.core import runs
from mimoq.core.settings import Settings
from mimoq.worker.run_progress import read_progress

RUN = "bench-run"
SAMPLE_EVERY_S = 0.25
FROM_DONE = 0.10
#: Samples with less than this left are also reported apart (a few call latencies).
TAIL_S = 3.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--window-s", type=float, default=6.0, help="the quota window (60 s / 10)")
    p.add_argument("--rpm", type=int, default=100, help="requests per window")
    p.add_argument("--jobs", type=int, default=400, help="jobs of the run")
    p.add_argument("--competitor", type=int, default=200, help="tenant b's backlog")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--latency-median-ms", type=float, default=600.0)
    p.add_argument("--latency-sigma", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args(argv)


@dataclass(frozen=True)
class Sample:
    at: float
    done: int
    eta_at: float | None  # ours
    own_rate_at: float | None  # baseline: the run's own past rate
    quota_at: float | None  # baseline: the quota's pace, blind to tenants


def job(i: int, tenant: str, run: str | None) -> dict[str, object]:
    out: dict[str, object] = {"kind": "speech", "input": f"Line {i}.", "priority": "bulk",
                              "tenant": tenant}  # fmt: skip
    if run is not None:
        out["run"] = run
    return out


async def follow(redis: ArqRedis, settings: Settings, total: int, pace: float) -> list[Sample]:
    """Sample the run's ETA until it ends (a measuring interval, not synchronization)."""
    started = time.time()
    samples: list[Sample] = []
    while True:
        progress = await read_progress(redis, settings, RUN)
        assert progress is not None
        now = time.time()
        if progress.ended:
            samples.append(Sample(progress.record.ended_at or now, total, None, None, None))
            return samples
        done = progress.record.done
        remaining = total - done
        rate = done / (now - started) if done >= 3 else None
        samples.append(Sample(
            now, done, progress.estimate.eta_at,
            now + remaining / rate if rate else None, now + remaining / pace,
        ))  # fmt: skip
        await asyncio.sleep(SAMPLE_EVERY_S)


def errors(samples: list[Sample], total: int) -> dict[str, list[tuple[float, float]]]:
    """Per estimator: (relative error, seconds really left) of each scored sample."""
    ended = samples[-1].at
    out: dict[str, list[tuple[float, float]]] = {"mimoq": [], "own past rate": [],
                                                 "quota only": []}  # fmt: skip
    for s in samples[:-1]:
        left = ended - s.at
        if s.done < FROM_DONE * total or left <= 0:
            continue
        for name, eta in (("mimoq", s.eta_at), ("own past rate", s.own_rate_at),
                          ("quota only", s.quota_at)):  # fmt: skip
            if eta is not None:
                out[name].append((abs(eta - ended) / left, left))
    return out


async def scenario(fleet: Fleet, spec: FleetSpec, args: argparse.Namespace, *, rival: int,
                   redis: ArqRedis, settings: Settings) -> list[list[str]]:  # fmt: skip
    await redis.flushall()
    name = "competing" if rival else "alone"
    workers = fleet.workers(args.workers, spec, name)
    try:
        await enqueue_all(redis, [(f"b-{i}", job(i, "b", None)) for i in range(rival)])
        await runs.begin(redis, RUN, tenant="a", priority="bulk")
        await enqueue_all(redis, [(f"a-{i}", job(i, "a", RUN)) for i in range(args.jobs)])
        await runs.seal(redis, RUN)
        pace = args.rpm * settings.limiter.target / args.window_s
        samples = await follow(redis, settings, args.jobs, pace)
    finally:
        stop_all(workers)
    rows = []
    took = samples[-1].at - samples[0].at
    for estimator, scored in errors(samples, args.jobs).items():
        if not scored:
            continue
        errs = sorted(e for e, _ in scored)
        within = sum(1 for e in errs if e <= 0.15) / len(errs)
        # the last seconds: a relative error over almost no time left says little
        early = [e for e, left in scored if left >= TAIL_S] or [0.0]
        # ... so there, the error in seconds (against a call's own spread of latency)
        tail = [e * left for e, left in scored if left < TAIL_S] or [0.0]
        rows.append([
            name, estimator, f"{took:.1f}", str(len(errs)), f"{statistics.median(errs):.1%}",
            f"{errs[int(0.9 * (len(errs) - 1))]:.1%}", f"{errs[-1]:.1%}", f"{within:.0%}",
            f"{max(early):.1%}", f"{max(tail):.2f}",
        ])  # fmt: skip
    return rows


async def main_async(args: argparse.Namespace) -> int:
    mean, dev = lognormal_latency_s(args.latency_median_ms / 1000, args.latency_sigma)
    target = default_target(args.window_s)
    concurrency = concurrency_per_worker(args.rpm * target / args.window_s, mean, dev,
                                         args.workers) + 1  # fmt: skip
    print("$ python bench/eta.py " + " ".join(sys.argv[1:]))
    print(f"quota {args.rpm} requests / {args.window_s:g} s (10x compressed at 6 s), a run of "
          f"{args.jobs} bulk jobs, competitor backlog {args.competitor}; {args.workers} workers "
          f"x {concurrency}; latency median {args.latency_median_ms:g} ms", flush=True)  # fmt: skip
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="mimoq-eta-") as tmp, Fleet(Path(tmp)) as fleet:
        redis_svc = fleet.redis()
        sim = fleet.simulator(
            "--quota-rpm", str(args.rpm), "--quota-window-s", f"{args.window_s:g}",
            "--quota-algorithm", "sliding_window", "--audio-bytes", "4800",
            "--latency-median-ms", f"{args.latency_median_ms:g}",
            "--latency-sigma", f"{args.latency_sigma:g}", "--seed", str(args.seed),
        )  # fmt: skip
        spec = FleetSpec(
            redis_url=redis_svc.url, mimo_base_url=sim.url + "/v1", data_dir=Path(tmp) / "data",
            window_s=args.window_s, concurrency=concurrency, poll_delay_s=0.05, limits=True,
            extra_env=(("MIMOQ_LIMIT_DEFAULT_RPM", str(args.rpm)),),
        )  # fmt: skip
        saved = dict(os.environ)
        os.environ.update(spec.env())  # the workers' settings, to read their limiter's keys
        try:
            settings = Settings()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        redis = ArqRedis.from_url(redis_svc.url)
        http = httpx.AsyncClient(base_url=sim.url, timeout=10)
        try:
            for rival in (0, args.competitor):
                (await http.post("/_sim/reset")).raise_for_status()
                print(f"running {'competing' if rival else 'alone'} ...", file=sys.stderr,
                      flush=True)  # fmt: skip
                rows += await scenario(fleet, spec, args, rival=rival, redis=redis,
                                       settings=settings)  # fmt: skip
        finally:
            await http.aclose()
            await redis.aclose()
    print(f"\nETA error over the time really left, every sample after {FROM_DONE:.0%} done")
    head = ["scenario", "estimator", "run took (s)", "samples", "median", "p90", "max",
            "within 15 %", f"max, {TAIL_S:g}+ s left",
            f"max s off, <{TAIL_S:g} s left"]  # fmt: skip
    print(table([head, *rows]))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_bench(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
