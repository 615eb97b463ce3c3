"""Account health, side by side in one run: a 402 storm with and without the account
breaker, and one account against two on the same backlog.

    python bench/accounts.py [--jobs 150] [--storm-s 5] [--window-s 5] [--rpm 30]
                             [--windows 6] [--workers 2] [--concurrency 16] [--no-hog]
                             [--only storm|accounts|mixed ...] [--priority interactive|bulk]

One private redis-server and one ``mimoq sim`` (its own process, accounts per key with
``--per-key-quota``) serve every phase, with a flushed Redis and a reset simulator between
phases, and a CPU-hog busy loop per core runs for the whole run (a loaded host, as the
scheduling bench does; ``--no-hog`` turns it off).

**402 storm.** ``--jobs`` speech jobs are queued; once 20 have finished the simulator
answers every call of the account with 402 for ``--storm-s`` seconds, then the account is
restored and the rest of the backlog runs. ``breaker``: ``--workers`` ``mimoq worker``
processes (the fleet's default: the account breaker on, probes every 0.5 s doubling to
2 s). ``no breaker``: a worker with the breaker off (how the fleet behaved before: every
402 fails its job). Printed: requests the simulator received for the account during the
storm, the breaker's probes, jobs failed, jobs finished.

**One account vs two.** The simulator enforces a quota of ``--rpm`` requests per
``--window-s`` seconds for *each* key; the workers' limiter is set to the same quota.
The same backlog (enough for every window) runs with one key, then with two keys (two
accounts). Printed: succeeded jobs per window over windows 2..N (window 1 is the ramp-up)
and the simulator's 429s, each account's share of the jobs, the ratio of the two.

**Mixed.** The same, with the backlog split between two models (``mimo-v2.5-tts`` and
``mimo-v2.5-tts-voicedesign``, each with its own quota per key), so every account serves two
schedules at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from _quota_fleet import Fleet, FleetSpec, stop_all
from _support import sigterm_as_interrupt, start_hogs, stop_hogs
from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.core.dialect_constants import TTS_MODEL, VOICEDESIGN_MODEL
from mimoq.core.keypool import fingerprint
from mimoq.core.logs import configure
from mimoq.core.settings import Settings
from mimoq.producer.client import Producer
from mimoq.worker.accounts.breaker import PAUSED_SET, state_key
from mimoq.worker.arq_worker import build_worker, drain_and_close

KEYS = ("sk-bench-account-one-0001", "sk-bench-account-two-0002")
PROBE_BASE_S, PROBE_MAX_S = 0.5, 2.0


@dataclass(frozen=True)
class AccountsSpec(FleetSpec):
    """A fleet spec with the key pool and breaker settings of this bench."""

    keys: tuple[str, ...] = KEYS[:1]
    rpm: int = 100

    def env(self) -> dict[str, str]:
        env = super().env()
        env.update(
            MIMO_API_KEYS=" ".join(self.keys),
            MIMOQ_LIMIT_DEFAULT_RPM=str(self.rpm),
            MIMOQ_ACCOUNT_PROBE_BASE_S=f"{PROBE_BASE_S:g}",
            MIMOQ_ACCOUNT_PROBE_MAX_S=f"{PROBE_MAX_S:g}",
            MIMOQ_LOG_LEVEL="INFO",
        )
        return env

    def settings(self) -> Settings:
        """The same configuration for an in-process worker and the producer."""
        return Settings(
            redis_url=self.redis_url,
            mimo={
                "base_url": self.mimo_base_url,
                "key": None,
                "keys": " ".join(self.keys),
                "numbered_keys": {},
            },
            storage={"data_dir": self.data_dir},
            worker={"concurrency": self.concurrency, "poll_delay_s": self.poll_delay_s},
            limiter={"enabled": self.limits, "window_s": self.window_s, "default_rpm": self.rpm},
            retry={"backoff_base_s": 0.05, "backoff_max_s": 0.5},
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--jobs", type=int, default=150, help="backlog of the storm phases")
    p.add_argument("--storm-s", type=float, default=5.0, help="how long the 402 storm lasts")
    p.add_argument("--window-s", type=float, default=5.0, help="the compressed quota window")
    p.add_argument("--rpm", type=int, default=30, help="requests per window per account")
    p.add_argument("--windows", type=int, default=6, help="windows per account phase (>= 2)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=16, help="MIMOQ_CONCURRENCY per worker")
    p.add_argument("--no-hog", action="store_true", help="no CPU-hog busy loops")
    p.add_argument("--only", nargs="+", choices=PHASES, default=list(PHASES))
    p.add_argument(
        "--priority",
        choices=("interactive", "bulk"),
        default="interactive",
        help="the lane of the throughput phases' jobs (bulk: as `mimoq batch` sends them)",
    )
    return p.parse_args(argv)


PHASES = ("storm", "accounts", "mixed")


def job(tag: str, i: int, model: str = TTS_MODEL, lane: str = "interactive") -> dict[str, object]:
    out: dict[str, object] = {
        "kind": "speech", "input": f"{tag} sentence {i}.", "model": model, "priority": lane,
    }  # fmt: skip
    if model == VOICEDESIGN_MODEL:
        out["instructions"] = "a calm, low voice"
    return out


async def enqueue(
    producer: Producer, n: int, tag: str, models: tuple[str, ...] = (TTS_MODEL,),
    lane: str = "interactive",
) -> list[str]:  # fmt: skip
    # Models alternate, so a mixed backlog keeps both models busy from the first job on.
    return [
        (await producer.enqueue(job(tag, i, models[i % len(models)], lane))).job_id
        for i in range(n)
    ]


async def results(redis: ArqRedis, ids: list[str]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for start in range(0, len(ids), 500):
        raws = await redis.mget([wire.result_key(i) for i in ids[start : start + 500]])
        out += [json.loads(r) for r in raws if r is not None]
    return out


async def until(check: object, what: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)  # the poll interval of a condition, not a synchronisation


def account_requests(sim: str, account: str) -> int:
    described = httpx.get(f"{sim}/_sim/accounts", timeout=10).json()
    return int(described["requests"].get(account, 0))


def set_state(sim: str, account: str, state: str) -> None:
    httpx.post(f"{sim}/_sim/accounts", json={"account": account, "state": state}, timeout=10)


@dataclass
class StormRow:
    name: str
    sent: int
    probes: int | None
    failed: int
    succeeded: int


async def storm(
    fleet: Fleet, spec: AccountsSpec, redis: ArqRedis, sim: str, args: argparse.Namespace,
    *, breaker: bool,
) -> StormRow:  # fmt: skip
    """One 402 storm over a backlog of ``--jobs``."""
    await redis.flushall()
    httpx.post(f"{sim}/_sim/reset", timeout=10)
    account = fingerprint(spec.keys[0])
    producer = Producer(redis, spec.settings())
    ids = await enqueue(producer, args.jobs, "storm")
    workers, local = [], None
    if breaker:
        workers = fleet.workers(args.workers, spec, "storm")
    else:
        local = build_worker(spec.settings(), handle_signals=False, account_breaker=False)
        task = asyncio.create_task(local.async_run())
    try:

        async def twenty() -> bool:
            return len(await results(redis, ids)) >= 20

        await until(twenty, "20 jobs before the storm")
        set_state(sim, account, "insufficient_funds")
        before = account_requests(sim, account)
        await asyncio.sleep(args.storm_s)  # the storm's length: what is measured happens in it
        sent = account_requests(sim, account) - before
        probes = int(await redis.hget(state_key(account), "probes") or 0) if breaker else None
        set_state(sim, account, "ok")

        async def done() -> bool:
            return len(await results(redis, ids)) >= len(ids)

        await until(done, "the whole backlog")
        paused_after = await redis.sismember(PAUSED_SET, account)
        if paused_after:
            raise RuntimeError("the account is still paused after the backlog finished")
    finally:
        stop_all(workers)
        if local is not None:
            await drain_and_close(local, grace_s=5)
            task.cancel()
    finished = await results(redis, ids)
    failed = sum(1 for r in finished if r["status"] == "failed")
    name = "breaker" if breaker else "no breaker"
    return StormRow(name, sent, probes, failed, len(finished) - failed)


@dataclass
class Run:
    """One throughput phase: succeeded jobs per window, 429s, steady jobs per account."""

    per_window: list[int]
    n429: int
    per_account: dict[str, int]


async def throughput(
    fleet: Fleet, spec: AccountsSpec, redis: ArqRedis, sim: str, args: argparse.Namespace,
    models: tuple[str, ...] = (TTS_MODEL,),
) -> Run:  # fmt: skip
    """Succeeded jobs per window and the simulator's 429s, for ``spec.keys`` accounts."""
    await redis.flushall()
    httpx.post(f"{sim}/_sim/reset", timeout=10)
    backlog = 2 * args.rpm * args.windows * len(spec.keys) * len(models)
    producer = Producer(redis, spec.settings())
    ids = await enqueue(producer, backlog, f"x{len(spec.keys)}", models, args.priority)
    workers = fleet.workers(args.workers, spec, f"x{len(spec.keys)}")
    t0 = time.time()
    try:
        await asyncio.sleep(args.windows * args.window_s)  # the measured interval itself
    finally:
        stop_all(workers)
    stats = httpx.get(f"{sim}/_sim/stats", timeout=10).json()
    per_window = [0] * args.windows
    per_account: dict[str, int] = {}
    for r in await results(redis, ids):
        k = int((float(r["finished_at"]) - t0) // args.window_s)  # type: ignore[arg-type]
        if r["status"] == "succeeded" and 0 <= k < args.windows:
            per_window[k] += 1
            if k >= 1:
                name = str(r.get("account"))
                per_account[name] = per_account.get(name, 0) + 1
    return Run(per_window, int(stats["responses"].get("429", 0)), per_account)


def compare(title: str, one: Run, two: Run) -> None:
    """One vs two accounts: steady jobs per window (windows 2..N), 429s, the ratio."""
    steady_one, steady_two = one.per_window[1:], two.per_window[1:]
    print(title)
    print(f"{'accounts':<10}{'per window (steady)':<36}{'mean':>8}{'429s':>6}  per account")
    for label, run, steady in (("1", one, steady_one), ("2", two, steady_two)):
        shares = " ".join(f"{a[:6]}:{n}" for a, n in sorted(run.per_account.items()))
        print(f"{label:<10}{steady!s:<36}{statistics.mean(steady):>8.1f}{run.n429:>6}  {shares}")
    ratio = statistics.mean(steady_two) / max(statistics.mean(steady_one), 1e-9)
    print(f"two / one accounts: {ratio:.2f}x finished jobs per window")


async def main_async(args: argparse.Namespace, workdir: Path) -> int:
    hogs = [] if args.no_hog else start_hogs(os.cpu_count() or 1)
    try:
        with Fleet(workdir) as fleet:
            return await phases(fleet, args, workdir)
    finally:
        stop_hogs(hogs)


async def phases(fleet: Fleet, args: argparse.Namespace, workdir: Path) -> int:
    redis_service = fleet.redis()
    sim = fleet.simulator(
        "--api-keys",
        ",".join(KEYS),
        "--per-key-quota",
        "--latency-ms",
        "20",
        "--quota-rpm",
        str(args.rpm),
        "--quota-window-s",
        f"{args.window_s:g}",
    )
    redis = ArqRedis.from_url(redis_service.url)
    base = AccountsSpec(
        redis_url=redis_service.url,
        mimo_base_url=sim.url + "/v1",
        data_dir=workdir / "data",
        window_s=args.window_s,
        concurrency=args.concurrency,
        poll_delay_s=0.02,
        limits=True,
        rpm=args.rpm,
    )
    both = AccountsSpec(**{**base.__dict__, "keys": KEYS})
    mixed = (TTS_MODEL, VOICEDESIGN_MODEL)
    rows, runs, mixed_runs = [], None, None
    try:
        if "storm" in args.only:
            # The storm runs far below the quota, so only the 402s shape it.
            storm_spec = AccountsSpec(**{**base.__dict__, "limits": False})
            rows = [
                await storm(fleet, storm_spec, redis, sim.url, args, breaker=True),
                await storm(fleet, storm_spec, redis, sim.url, args, breaker=False),
            ]
        if "accounts" in args.only:
            runs = (
                await throughput(fleet, base, redis, sim.url, args),
                await throughput(fleet, both, redis, sim.url, args),
            )
        if "mixed" in args.only:
            mixed_runs = (
                await throughput(fleet, base, redis, sim.url, args, mixed),
                await throughput(fleet, both, redis, sim.url, args, mixed),
            )
    finally:
        await redis.aclose()
    print(f"CPU hogs: {0 if args.no_hog else os.cpu_count()}; {args.workers} workers x "
          f"{args.concurrency} slots; throughput jobs: {args.priority}")  # fmt: skip
    if rows:
        print_storm(rows, args)
    window = f"quota {args.rpm} requests / {args.window_s:g} s per account"
    steady = f"{args.windows} windows, steady = windows 2..{args.windows}"
    if runs:
        compare(f"one vs two accounts: {window}, {steady}", *runs)
    if mixed_runs:
        compare(f"mixed, two models at once: {window} and model, {steady}", *mixed_runs)
    return 0


def print_storm(rows: list[StormRow], args: argparse.Namespace) -> None:
    print(
        f"402 storm: {args.jobs} jobs, {args.workers} x {args.concurrency} slots, storm "
        f"{args.storm_s:g} s, probes every {PROBE_BASE_S:g} s doubling to {PROBE_MAX_S:g} s"
    )
    print(f"{'fleet':<12}{'requests in storm':>18}{'probes':>8}{'failed':>8}{'succeeded':>11}")
    for r in rows:
        probes = "-" if r.probes is None else str(r.probes)
        print(f"{r.name:<12}{r.sent:>18}{probes:>8}{r.failed:>8}{r.succeeded:>11}")
    b, n = rows
    print(
        f"requests in storm, no breaker / breaker: {n.sent / max(b.sent, 1):.1f}x; "
        f"breaker requests per probe: {b.sent / max(b.probes or 1, 1):.2f}"
    )
    print()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.windows < 2:
        print("--windows must be at least 2", file=sys.stderr)
        return 2
    sigterm_as_interrupt()
    configure(level="ERROR")  # the in-process worker's per-job lines would bury the tables
    with tempfile.TemporaryDirectory(prefix="mimoq-bench-accounts-") as tmp:
        return asyncio.run(main_async(args, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
