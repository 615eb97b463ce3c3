"""Scheduling under load: quota share without bursts, lanes, tenants, Redis work per call.

    python bench/scheduling.py [--window-s 10] [--rpm 100] [--latency-median-ms 600]
                               [--latency-sigma 0.3] [--workers 4] [--windows 5]
                               [--no-hog] [--only NAME ...] [--seed 1]

Time-compressed against the simulator (sliding window: MiMo's one-minute quota becomes
``--window-s`` seconds, for the simulator and for the workers), 4 real ``mimoq worker``
processes, and a CPU-hog busy loop per core for the whole run (a loaded host), so every
figure is measured side by side in one run. One private redis-server and one simulator
serve every scenario in turn, each with fresh workers, a flushed Redis and a reset
simulator; the backlog is enqueued at t0 by raw EVALSHA of enqueue.lua (as any producer):

- ``one model`` / ``two models``: a bulk backlog of 1.2 x what the run can finish per
  model (``mimo-v2.5-tts``; then it and ``mimo-v2.5-tts-voicedesign`` at once): succeeded
  jobs per steady window (2..N) over the quota, and the simulator's 429s;
- ``interactive behind 300`` / ``behind 5000``: an interactive probe every half window
  while the bulk backlog runs: enqueue-to-result latency against two slot spacings + the
  call's latency (p95), and the share of the quota bulk and all lanes got meanwhile;
- ``tenants 5000+10``: tenant ``big`` enqueues 5,000 bulk jobs, then ``small`` 10: when
  the small tenant's last job finishes, in slots after its enqueue (the slots include the
  call's own latency, ~6 slots); ``interactive tenants 1000+10``: the same in the
  interactive lane (1,000: every one of them holds a ticket at once);
- ``redis at 100`` / ``at 10000``: Redis commands (INFO commandstats, Lua's inner calls
  included, the workers' polling too) per call the simulator admitted, over the same
  interval after the start-up, at backlogs of 100 and 10,000;
- ``one 429 clean`` / ``one 429 repeated``: a single 429 injected into a steady run (a
  simulator fault) after a clean history (the new rule: x0.9, regained within a window),
  and the same with the history marked unclean just before (the previous rule: x0.7, then
  +0.1 a window): jobs finished in the 3 windows after it, over the quota.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from _quota_fleet import Fleet, FleetSpec, stop_all
from _quota_measure import admitted, concurrency_per_worker, lognormal_latency_s, table
from _support import Service, default_target, run_bench, start_hogs, stop_hogs
from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.core.dialect_constants import TTS_MODEL, VOICEDESIGN_MODEL
from mimoq.core.results import read_result

PROBES, PROBE_EVERY_S = 4, 0.5  # interactive probes, and how many windows apart
TTS_AUDIO_BYTES = 4_800  # a tenth of a second of audio: the bench is about scheduling
SCENARIOS = (
    "one model", "two models", "interactive behind 300", "interactive behind 5000",
    "tenants 5000+10", "interactive tenants 1000+10", "redis at 100", "redis at 10000",
    "one 429 clean", "one 429 repeated",
)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--window-s", type=float, default=10.0, help="the compressed quota window")
    p.add_argument("--rpm", type=int, default=100, help="requests per window, each model")
    p.add_argument("--latency-median-ms", type=float, default=600.0)
    p.add_argument("--latency-sigma", type=float, default=0.3, help="lognormal sigma")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--windows", type=int, default=5, help="windows of the share runs (>= 3)")
    p.add_argument("--poll-delay", type=float, default=0.05, help="MIMOQ_POLL_DELAY_S")
    p.add_argument(
        "--target", type=float, default=None, help="MIMOQ_LIMIT_TARGET (default: the setting's)"
    )
    p.add_argument("--no-hog", action="store_true", help="no CPU-hog busy loops")
    p.add_argument("--only", action="append", metavar="NAME", choices=SCENARIOS)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    if args.windows < 3:
        p.error("--windows must be at least 3 (window 1 is the ramp-up)")
    return args


def pacing_target(args: argparse.Namespace) -> float:
    """The pacing target the workers run at: ``--target``, else the setting's default."""
    if args.target is not None:
        return float(args.target)
    return default_target(args.window_s)


def job(model: str, i: int, *, lane: str, tenant: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "speech", "model": model, "input": f"Bench line {i}."}
    if model == VOICEDESIGN_MODEL:
        out["instructions"] = "a calm, low voice"
    out["priority"] = lane
    if tenant is not None:
        out["tenant"] = tenant
    return out


async def enqueue_all(redis: ArqRedis, jobs: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Raw EVALSHA of enqueue.lua, pipelined 500 at a time (what a foreign producer does)."""
    sha = await redis.script_load(wire.enqueue_script())
    for start in range(0, len(jobs), 500):
        async with redis.pipeline(transaction=False) as pipe:
            for job_id, body in jobs[start : start + 500]:
                pipe.evalsha(sha, 4, *wire.enqueue_keys(job_id), job_id, json.dumps(body), 0)
            await pipe.execute()


async def finished_at(redis: ArqRedis, ids: Sequence[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        raws = await redis.mget([wire.result_key(i) for i in part])
        for job_id, raw in zip(part, raws, strict=True):
            if raw is not None:
                record = json.loads(raw)
                if record.get("status") == "succeeded":
                    out[job_id] = float(record["finished_at"])
    return out


async def commands_total(redis: ArqRedis) -> int:
    stats = await redis.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


@dataclass
class Run:
    """One scenario's services and clients."""

    args: argparse.Namespace
    fleet: Fleet
    redis_svc: Service
    sim: Service
    redis: ArqRedis
    http: httpx.AsyncClient
    concurrency: int

    @property
    def target(self) -> float:
        return pacing_target(self.args)

    @property
    def slot_s(self) -> float:
        return self.args.window_s / (self.args.rpm * self.target)

    async def start(self, name: str) -> list[Service]:
        await self.redis.flushall()
        (await self.http.post("/_sim/reset")).raise_for_status()
        spec = FleetSpec(
            redis_url=self.redis_svc.url, mimo_base_url=self.sim.url + "/v1",
            data_dir=self.fleet.workdir / name.replace(" ", "-"), window_s=self.args.window_s,
            concurrency=self.concurrency, poll_delay_s=self.args.poll_delay, limits=True,
            extra_env=(("MIMOQ_LIMIT_TARGET", f"{self.target:g}"),),
        )  # fmt: skip
        return self.fleet.workers(self.args.workers, spec, name.replace(" ", "-"))

    async def stats(self) -> dict[str, Any]:
        answer: dict[str, Any] = (await self.http.get("/_sim/stats")).json()
        return answer

    async def at(self, t: float) -> None:
        # a measuring interval on the wall clock, not a stand-in for synchronization
        await asyncio.sleep(max(0.0, t - time.time()))


async def report_respaced(redis: ArqRedis) -> None:
    """How many due holders the pace or the guard held back (stderr: a diagnostic)."""
    # (the counts are "c:" fields of each model's state hash)
    async for key in redis.scan_iter(match="mimoq:limit:*:state"):
        counts = await redis.hgetall(key)
        respaced = {
            k.decode().removeprefix("c:"): int(v)
            for k, v in counts.items()
            if k.startswith(b"c:respaced")
        }
        print(f"  {key.decode()}: {respaced or 'nothing re-spaced'}", file=sys.stderr)


async def share_run(run: Run, models: Sequence[str]) -> list[list[str]]:
    a = run.args
    per_model = math.ceil(1.2 * a.rpm * a.windows)
    prefix = {TTS_MODEL: "tts", VOICEDESIGN_MODEL: "design"}
    jobs = [(f"{prefix[m]}-{i}", job(m, i, lane="bulk")) for i in range(per_model) for m in models]
    workers = await run.start(f"share-{len(models)}")
    try:
        t0 = time.time()
        await enqueue_all(run.redis, jobs)
        samples = []
        for k in range(1, a.windows + 1):
            await run.at(t0 + k * a.window_s)
            samples.append(await run.stats())
    finally:
        stop_all(workers)
    await report_respaced(run.redis)
    done = await finished_at(run.redis, [j for j, _ in jobs])
    rows = []
    for m in models:
        ids = [j for j, body in jobs if body["model"] == m]
        per_window = [0] * a.windows
        for j in ids:
            if j in done and 0 <= (k := math.floor((done[j] - t0) / a.window_s)) < a.windows:
                per_window[k] += 1
        steady = per_window[1:]
        rejected = int(samples[-1].get("quota_rejected", {}).get(m, 0))
        admitted_steady = admitted(samples[-1], m) - admitted(samples[0], m)
        rows.append([
            f"{len(models)} model(s)", m, " ".join(map(str, per_window)),
            f"{min(steady) / a.rpm:.1%}", f"{sum(steady) / (a.rpm * len(steady)):.1%}",
            f"{admitted_steady / (a.rpm * len(steady)):.1%}", str(rejected),
        ])  # fmt: skip
    return rows


async def interactive_run(run: Run, depth: int, latency_p95_s: float) -> list[str]:
    a = run.args
    bulk = [(f"b-{i}", job(TTS_MODEL, i, lane="bulk")) for i in range(depth)]
    workers = await run.start(f"interactive-{depth}")
    latencies: list[float] = []
    try:
        t0 = time.time()
        await enqueue_all(run.redis, bulk)
        await run.at(t0 + a.window_s)  # the backlog runs at its pace before the first probe
        before = admitted(await run.stats(), TTS_MODEL)
        measured_from = time.time()
        for n in range(PROBES):  # one probe every half window: sparse interactive work
            await run.at(measured_from + n * PROBE_EVERY_S * a.window_s)
            probe = f"probe-{n}"
            asked = time.time()
            await enqueue_all(run.redis, [(probe, job(TTS_MODEL, n, lane="interactive"))])
            deadline = asked + 60
            while (result := await read_result(run.redis, probe)) is None:
                assert time.time() < deadline, f"{probe} never finished"
                await asyncio.sleep(0.01)  # polling the result, as a client does
            latencies.append((result.finished_at or asked) - asked)
        await run.at(measured_from + PROBES * PROBE_EVERY_S * a.window_s)
        elapsed = time.time() - measured_from
        calls = admitted(await run.stats(), TTS_MODEL) - before
        rejected = int((await run.stats()).get("quota_rejected", {}).get(TTS_MODEL, 0))
    finally:
        stop_all(workers)
    await report_respaced(run.redis)
    print(f"  probes (s): {' '.join(f'{x:.2f}' for x in latencies)}; {calls} calls in "
          f"{elapsed:.1f} s", file=sys.stderr)  # fmt: skip
    bound = 2 * run.slot_s + latency_p95_s
    quota = a.rpm * elapsed / a.window_s
    return [
        f"behind {depth}", f"{statistics.median(latencies):.2f}", f"{max(latencies):.2f}",
        f"{bound:.2f}", f"{(calls - len(latencies)) / quota:.1%}", f"{calls / quota:.1%}",
        str(rejected),
    ]  # fmt: skip


async def tenants_run(run: Run, *, lane: str = "bulk", depth: int = 5_000) -> list[str]:
    big = [(f"big-{i}", job(TTS_MODEL, i, lane=lane, tenant="big")) for i in range(depth)]
    small = [(f"small-{i}", job(TTS_MODEL, i, lane=lane, tenant="small")) for i in range(10)]
    workers = await run.start(f"tenants-{lane}")
    try:
        await enqueue_all(run.redis, big)
        asked = time.time()
        await enqueue_all(run.redis, small)
        deadline = asked + 120
        while len(done := await finished_at(run.redis, [j for j, _ in small])) < len(small):
            assert time.time() < deadline, "the small tenant never finished"
            await asyncio.sleep(0.05)
        big_done = len(await finished_at(run.redis, [j for j, _ in big]))
    finally:
        stop_all(workers)
    last = max(done.values()) - asked
    return [f"{lane}, {depth:,}+10", f"{last:.2f}", f"{last / run.slot_s:.1f}", str(big_done)]


async def redis_run(run: Run, depth: int) -> list[str]:
    bulk = [(f"r-{i}", job(TTS_MODEL, i, lane="bulk")) for i in range(depth)]
    workers = await run.start(f"redis-{depth}")
    try:
        t0 = time.time()
        await enqueue_all(run.redis, bulk)
        await run.at(t0 + 2.0)  # past the start-up; backlog 100 lasts ~10 s at the quota
        c0, a0 = await commands_total(run.redis), admitted(await run.stats(), TTS_MODEL)
        await run.at(t0 + 8.0)
        c1, a1 = await commands_total(run.redis), admitted(await run.stats(), TTS_MODEL)
    finally:
        stop_all(workers)
    return [f"backlog {depth}", str(a1 - a0), str(c1 - c0), f"{(c1 - c0) / max(a1 - a0, 1):.1f}"]


async def one_429_run(run: Run, *, clean: bool) -> list[str]:
    a = run.args
    windows = 5
    bulk = [(f"f-{i}", job(TTS_MODEL, i, lane="bulk")) for i in range(a.rpm * (windows + 1))]
    workers = await run.start(f"one-429-{clean}")
    try:
        t0 = time.time()
        await enqueue_all(run.redis, bulk)
        await run.at(t0 + 1.5 * a.window_s)
        if not clean:
            # the previous rule: this 429 counts as a repeat (x0.7, +0.1 per window)
            sec, usec = await run.redis.time()
            async for key in run.redis.scan_iter(match=f"*{TTS_MODEL}*:state"):
                await run.redis.hset(key, "last429", f"{sec + usec / 1e6:.6f}")
        fault = {"kind": "status", "status": 429, "times": 1, "match": "Bench line"}
        (await run.http.post("/_sim/faults", json=fault)).raise_for_status()
        hit = time.time()
        await run.at(hit + 3 * a.window_s)
        rejected = (await run.stats()).get("responses", {}).get("429", 0)
    finally:
        stop_all(workers)
    done = await finished_at(run.redis, [j for j, _ in bulk])
    after = sum(hit <= at < hit + 3 * a.window_s for at in done.values())
    name = "clean history: x0.9" if clean else "repeat: x0.7, +0.1/window"
    return [name, str(rejected), str(after), f"{after / (3 * a.rpm):.1%}"]


async def main_async(args: argparse.Namespace) -> int:
    chosen = [s for s in SCENARIOS if not args.only or s in args.only]
    mean, dev = lognormal_latency_s(args.latency_median_ms / 1000, args.latency_sigma)
    target = pacing_target(args)
    rate = args.rpm * target / args.window_s
    models = 2 if "two models" in chosen else 1
    concurrency = concurrency_per_worker(rate * models, mean, dev, args.workers) + 1
    p95 = args.latency_median_ms / 1000 * math.exp(1.645 * args.latency_sigma)
    print("$ python bench/scheduling.py " + " ".join(sys.argv[1:]))
    print(
        f"quota {args.rpm} requests / {args.window_s:g} s per model (sliding window), paced "
        f"at {target:.1%}: one slot = {args.window_s / (args.rpm * target) * 1000:.0f} ms; latency "
        f"lognormal median {args.latency_median_ms:g} ms sigma {args.latency_sigma:g} "
        f"(p95 {p95:.2f} s); {args.workers} workers x {concurrency}; CPU hogs: "
        f"{0 if args.no_hog else os.cpu_count()}",
        flush=True,
    )
    hogs = [] if args.no_hog else start_hogs(os.cpu_count() or 1)
    share: list[list[str]] = []
    lanes: list[list[str]] = []
    tenants: list[list[str]] = []
    cost: list[list[str]] = []
    step: list[list[str]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="mimoq-sched-") as tmp, Fleet(Path(tmp)) as fleet:
            redis_svc = fleet.redis()
            sim = fleet.simulator(
                "--quota-rpm", str(args.rpm), "--quota-window-s", f"{args.window_s:g}",
                "--quota-algorithm", "sliding_window",
                "--latency-median-ms", f"{args.latency_median_ms:g}",
                "--latency-sigma", f"{args.latency_sigma:g}", "--seed", str(args.seed),
                "--audio-bytes", str(TTS_AUDIO_BYTES),
            )  # fmt: skip
            redis = ArqRedis.from_url(redis_svc.url)
            http = httpx.AsyncClient(base_url=sim.url, timeout=10)
            run = Run(args, fleet, redis_svc, sim, redis, http, concurrency)
            try:
                for name in chosen:
                    print(f"running {name} ...", file=sys.stderr, flush=True)
                    if name == "one model":
                        share += await share_run(run, [TTS_MODEL])
                    elif name == "two models":
                        share += await share_run(run, [TTS_MODEL, VOICEDESIGN_MODEL])
                    elif name.startswith("interactive tenants"):
                        tenants.append(await tenants_run(run, lane="interactive", depth=1_000))
                    elif name.startswith("interactive"):
                        lanes.append(await interactive_run(run, int(name.split()[-1]), p95))
                    elif name.startswith("one 429"):
                        step.append(await one_429_run(run, clean=name.endswith("clean")))
                    elif name.startswith("tenants"):
                        tenants.append(await tenants_run(run))
                    else:
                        cost.append(await redis_run(run, int(name.split()[-1])))
            finally:
                await http.aclose()
                await redis.aclose()
    finally:
        stop_hogs(hogs)
    if share:
        print("\n(a) share of each model's quota turned into finished jobs (steady windows)")
        head = ["run", "model", "jobs per window", "min steady", "mean steady",
                "upstream admitted", "429s"]  # fmt: skip
        print(table([head, *share]))
    if lanes:
        print(
            f"\n(b) {PROBES} interactive probes, one per {PROBE_EVERY_S:g} window, behind a bulk "
            "backlog: enqueue -> result (s); share of the quota over those windows"
        )
        head = ["backlog", "median", "max", "2 slots + p95 call", "bulk", "all lanes", "429s"]
        print(table([head, *lanes]))
    if tenants:
        print("\n(c) tenant 'small' (10 jobs) enqueued behind tenant 'big', same lane")
        head = ["lane, jobs big+small", "small's last job after (s)", "in slots",
                "big done by then"]  # fmt: skip
        print(table([head, *tenants]))
    if cost:
        print("\n(d) Redis commands per granted call (same 6 s interval)")
        print(table([["run", "calls", "commands", "per call"], *cost]))
        if len(cost) == 2:
            print(f"ratio 10000/100: {float(cost[1][3]) / max(float(cost[0][3]), 1e-9):.2f}")
    if step:
        print("\n(e) one 429 in a steady run: jobs finished in the 3 windows after it")
        print(table([["rule", "429s", "jobs", "of the quota"], *step]))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_bench(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
