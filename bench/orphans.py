"""Recovery time of a SIGKILLed worker's job: arq's in-progress timeout vs mimoq's heartbeat.

    python bench/orphans.py [--job-timeout 20] [--interval 1] [--latency-ms 3000] [--rounds 1]

One private redis-server and the simulator (every answer ``--latency-ms`` late, so a job is
in flight long enough to be killed), each in its own process. Each round runs both modes
side by side, with the same ``MIMOQ_JOB_TIMEOUT_S`` and ``MIMOQ_HEARTBEAT_INTERVAL_S``:

- ``arq_timeout``: ``MIMOQ_ORPHAN_RECOVERY=0``: the job runs again only once arq's
  in-progress key expires (job timeout + 5 s + arq's 10 s);
- ``heartbeat``: the default: a surviving worker re-queues it once the dead worker missed
  two beats.

Each mode flushes Redis, starts worker A, enqueues one speech job, waits until A has taken
it (its in-progress key), starts worker B and waits for B's heartbeat, SIGKILLs A, and
times kill → the job's second MiMo request (the re-run reaching the simulator) and kill →
the result record. Prints both times, in seconds and heartbeat intervals, and the ratio.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis as sync_redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._support import Service, Services, sigterm_as_interrupt, wait_until
from mimoq.core import wire

API_KEY = "sk-bench-orphans"


def _worker(services: Services, name: str, env: dict[str, str]) -> Service:
    argv = [sys.executable, "-m", "mimoq.cli", "worker"]
    return services._spawn(name, argv, "", env)


def _requests(sim: Service) -> int:
    return int(httpx.get(sim.url + "/_sim/stats", timeout=5).json()["total_requests"])


def _run(
    services: Services, redis_url: str, sim: Service, args: argparse.Namespace, mode: str, n: int
) -> tuple[float, float]:
    client = sync_redis.Redis.from_url(redis_url)
    client.flushall()
    httpx.post(sim.url + "/_sim/reset", timeout=5)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIMO", "REDIS_URL"))}
    env.update(
        {
            "REDIS_URL": redis_url,
            "MIMO_API_KEY": API_KEY,
            "MIMO_BASE_URL": sim.url + "/v1",
            "MIMOQ_DATA_DIR": str(services.workdir / f"data-{mode}-{n}"),
            "MIMOQ_JOB_TIMEOUT_S": str(args.job_timeout),
            "MIMOQ_HEARTBEAT_INTERVAL_S": str(args.interval),
            "MIMOQ_POLL_DELAY_S": "0.05",
            "MIMOQ_LIMITS_ENABLED": "false",
            "MIMOQ_ORPHAN_RECOVERY": "1" if mode == "heartbeat" else "0",
            "MIMOQ_LOG_LEVEL": "WARNING",
            "MIMOQ_METRICS_PORT": "0",  # two workers on one host: no fixed port
        }
    )
    job_id = f"orphan-{mode}-{n}"
    a = _worker(services, f"worker-a-{mode}-{n}", env)
    try:
        client.eval(
            wire.enqueue_script(),
            4,
            *wire.enqueue_keys(job_id),
            job_id,
            '{"kind":"speech","input":"survive a SIGKILL"}',
        )
        wait_until(
            lambda: bool(client.exists(wire.in_progress_key(job_id))) and _requests(sim) >= 1,
            what="worker A taking the job",
            alive=a.alive,
            timeout_s=60,
        )
        b = _worker(services, f"worker-b-{mode}-{n}", env)
        try:
            wait_until(
                lambda: len(client.keys(wire.WORKER_HEARTBEAT_PREFIX + "*")) >= 2,
                what="worker B's heartbeat",
                alive=b.alive,
                timeout_s=60,
            )
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{b.log_tail()}") from None
        a.process.send_signal(signal.SIGKILL)
        a.process.wait()
        killed = time.monotonic()
        limit = args.job_timeout + 60
        wait_until(lambda: _requests(sim) >= 2, what="the re-run", alive=b.alive, timeout_s=limit)
        rerun = time.monotonic() - killed
        wait_until(
            lambda: bool(client.exists(wire.result_key(job_id))),
            what="the result",
            alive=b.alive,
            timeout_s=limit,
        )
        done = time.monotonic() - killed
        b.stop()
        return rerun, done
    finally:
        a.stop()
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job-timeout", type=float, default=20.0)
    parser.add_argument("--interval", type=float, default=1.0, help="heartbeat interval, s")
    parser.add_argument("--latency-ms", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    sigterm_as_interrupt()
    with (
        tempfile.TemporaryDirectory(prefix="mimoq-bench-orphans-") as tmp,
        Services(Path(tmp)) as services,
    ):
        redis = services.redis()
        sim = services.simulator("--latency-ms", str(args.latency_ms), "--api-key", API_KEY)
        print(
            f"job timeout {args.job_timeout:g} s, heartbeat interval {args.interval:g} s, "
            f"MiMo latency {args.latency_ms} ms"
        )
        header = ("round", "mode", "kill→re-run s", "intervals", "kill→result s")
        print("{:>5} {:>12} {:>14} {:>9} {:>14}".format(*header))
        for n in range(args.rounds):
            times = {}
            for mode in ("arq_timeout", "heartbeat"):
                rerun, done = _run(services, redis.url, sim, args, mode, n)
                times[mode] = rerun
                row = (n + 1, mode, rerun, rerun / args.interval, done)
                print("{:>5} {:>12} {:>14.2f} {:>9.1f} {:>14.2f}".format(*row))
            ratio = times["arq_timeout"] / times["heartbeat"]
            print(f"      re-run ratio arq_timeout/heartbeat: {ratio:.1f}x")


if __name__ == "__main__":
    main()
