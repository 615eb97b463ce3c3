"""What a fleet costs the Redis primary by the second, beside its jobs: workers at MiMo's pace.

    python bench/fleet_fixed_cost.py [--workers 1 4] [--seconds 30] [--warmup 10] [--rpm 100]
                                     [--monitor FILE]

``redis_cost.py`` measures what a job costs where the quota is compressed to 400 calls a
second; a fleet at MiMo's real pace (``--rpm`` calls a minute per account and model) makes
few calls a second, and what its workers do by the second (polls, beats, admission
rounds, the limiter's housekeeping) is then most of what it costs the primary. For each
worker count: one private redis-server, ``mimoq sim``, and that many ``mimoq worker``
processes (default poll delay, heartbeat and admission round; the limiter on a 60 s
window), with a backlog of bulk and interactive jobs of 3 tenants on the speech and the
transcription model, more than the measurement can grant. After ``--warmup`` seconds, the
server's commands (``INFO commandstats``, scripts' commands included), round trips and
CPU over ``--seconds``, and the calls granted meanwhile (the limiter's grant logs). Per
second, per worker and second (what one more worker adds), and per call granted.
``--monitor FILE``: every command of the last worker count's measured interval
(``redis-cli MONITOR``; it inflates Redis CPU, read only its counts).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis as sync_redis
from _quota_fleet import Fleet, FleetSpec, stop_all
from _support import Service, run_sync_bench
from redis_cost import command_counts, enqueue_mimoq, redis_cpu, round_trips, write_clip

from mimoq.core import dialect_constants as dc
from mimoq.core.settings import Settings

TENANTS = ("t-a", "t-b", "t-c")
#: MiMo's quota window; the limiter paces at its real length here
WINDOW_S = 60.0
#: The bench's own requests from the reset to its read of the round trips: two TIMEs, two
#: INFO cpu, INFO commandstats and INFO stats
OWN_READS = 6


def backlog(n: int, clip: Path) -> list[dict[str, Any]]:
    """``n`` jobs: 80 % speech, 20 % transcription, 30 % interactive, 3 tenants."""
    jobs: list[dict[str, Any]] = []
    for i in range(n):
        job: dict[str, Any] = {"kind": "speech", "input": f"Sentence {i} of the fixed cost."}
        if i % 5 == 4:
            job = {"kind": "transcription", "file": str(clip), "language": "en"}
        job.update(id=f"job-{i}", tenant=TENANTS[i % 3])
        job["priority"] = "interactive" if i % 10 < 3 else "bulk"
        jobs.append(job)
    return jobs


def commands(client: sync_redis.Redis) -> int:
    """The fleet's commands since the reset: the bench's own reads of the counters and its
    two ``TIME``s left out (the workers' ``TIME``s and ``ZCOUNT``s inside scripts counted)."""
    counts = command_counts(client)
    counts["time"] -= 2
    return sum(n for name, n in counts.items() if name not in ("info", "config|resetstat"))


def granted(client: sync_redis.Redis, since: float, until: float) -> int:
    """Calls granted in (since, until], from every limiter's grant log."""
    logs = list(client.scan_iter(match="mimoq:limit:*:log", count=1000))
    return sum(int(client.zcount(key, f"({since}", until)) for key in logs)


def redis_time(client: sync_redis.Redis) -> float:
    seconds, micros = client.time()
    return float(seconds) + micros / 1e6


def measure(args: argparse.Namespace, workers: int, tmp: Path) -> dict[str, float]:
    workdir = tmp / f"w{workers}"
    workdir.mkdir()
    with Fleet(workdir) as fleet:
        redis = fleet.redis()
        sim = fleet.simulator("--seed", "1")
        data_dir = workdir / "data"
        data_dir.mkdir()
        clip = workdir / "clip.wav"
        write_clip(clip)
        settings = Settings(
            mimo={"base_url": sim.url + "/v1"},
            redis_url=redis.url,
            storage={"data_dir": data_dir, "input_roots": str(clip.parent)},
        )
        spec = FleetSpec(
            redis_url=redis.url,
            mimo_base_url=sim.url + "/v1",
            data_dir=data_dir,
            window_s=WINDOW_S,
            concurrency=8,
            poll_delay_s=Settings().worker.poll_delay_s,
            limits=True,
            extra_env=(("MIMOQ_LIMIT_DEFAULT_RPM", str(args.rpm)),),
        )
        # more than the quota grants in the run: the models' lanes stay waiting throughout
        need = int(args.rpm * (args.warmup + args.seconds) / WINDOW_S * 2) + 200
        asyncio.run(enqueue_mimoq(redis.url, settings, backlog(need, clip)))
        started: list[Service] = fleet.workers(workers, spec, "worker")
        client = sync_redis.Redis.from_url(redis.url)
        try:
            time.sleep(args.warmup)  # the measurement's warm-up, not a synchronization
            monitor = None
            if args.monitor and workers == args.workers[-1]:
                port = redis.url.rsplit(":", 1)[1].split("/")[0]
                with open(args.monitor, "wb") as out:
                    monitor = subprocess.Popen(["redis-cli", "-p", port, "monitor"], stdout=out)
            client.config_resetstat()
            cpu0, t0 = redis_cpu(client)[0], redis_time(client)
            time.sleep(args.seconds)  # the measured interval itself
            cpu1, t1 = redis_cpu(client)[0], redis_time(client)
            if monitor is not None:
                monitor.terminate()
                monitor.wait()
            count = commands(client)
            trips = round_trips(client) - OWN_READS
            calls = granted(client, t0, t1)
        finally:
            client.close()
            stop_all(started)
    span = t1 - t0
    return {"commands": count / span, "trips": trips / span, "cpu_ms": (cpu1 - cpu0) * 1000 / span,
            "granted": calls / span}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--rpm", type=int, default=100, help="calls a minute per model")
    parser.add_argument("--monitor", metavar="FILE", help="MONITOR the last count's interval")
    args = parser.parse_args()
    print(
        f"limiter window {WINDOW_S:g} s, {args.rpm} calls a minute per model ({dc.TTS_MODEL}, "
        f"{dc.ASR_MODEL}); {args.warmup:g} s warm-up, {args.seconds:g} s measured"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="mimoq-fixed-") as tmp:
        for n in args.workers:
            rows.append((n, measure(args, n, Path(tmp))))
    print(f"{'workers':>7}{'commands/s':>12}{'round trips/s':>15}{'Redis CPU ms/s':>16}"
          f"{'calls/s':>9}{'commands/call':>15}")  # fmt: skip
    for n, r in rows:
        per_call = r["commands"] / r["granted"] if r["granted"] else float("nan")
        print(f"{n:>7}{r['commands']:>12.1f}{r['trips']:>15.1f}{r['cpu_ms']:>16.2f}"
              f"{r['granted']:>9.2f}{per_call:>15.1f}")  # fmt: skip
    if len(rows) >= 2:
        (n0, a), (n1, b) = rows[0], rows[-1]
        extra = n1 - n0
        print(
            f"each worker more: {(b['commands'] - a['commands']) / extra:.1f} commands/s, "
            f"{(b['trips'] - a['trips']) / extra:.1f} round trips/s, "
            f"{(b['cpu_ms'] - a['cpu_ms']) / extra:.2f} ms/s of Redis CPU"
        )
    return 0


if __name__ == "__main__":
    sys.exit(run_sync_bench(main))
