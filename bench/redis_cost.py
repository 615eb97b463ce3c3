"""What a job costs the one Redis primary: bare arq against mimoq's mix, side by side in one run.

    python bench/redis_cost.py [--jobs 3000] [--workers 2] [--concurrency 32] [--seed 1]
                               [--rpm 400] [--monitor FILE] [--by-script] [--profile]
                               [--redis-config NAME=VALUE ...] [--pairs N] [--no-limiter]
                               [--redis-core N]

One private redis-server, counted with ``INFO commandstats`` (commands run inside scripts
included) and the server's own CPU time (``INFO cpu``), reset before each phase:

- ``bare``: N no-op jobs through arq's ``enqueue_job`` and a plain arq ``Worker`` (one
  process, the same ``max_jobs`` and poll delay, the JSON serializer);
- ``mimoq``: N jobs of a realistic mix through ``Producer.enqueue``, run by ``--workers``
  ``mimoq worker`` processes against ``mimoq sim``, limiter on (window 1 s, 400 requests per
  model; ``--rpm`` far above what the workers can send leaves no job waiting for a slot, the
  floor of a job's cost; ``--no-limiter`` turns it off: what the limiter's decisions, lanes
  and tenants cost is the difference), 3 tenants, both lanes: 80 % speech, 15 %
  transcription, 2 % long texts (split into chunk jobs), 3 % refused by MiMo (a 400); half
  the jobs with a signed callback to a loopback receiver; 4 % of upstream answers
  429/500/503 at random.

A phase ends when every job has its final result (and every callback is delivered, for
mimoq); the bench's own polling commands (``MGET`` of result keys) and its ``INFO`` reads are
left out of the counts. Reported per job: Redis commands, Redis CPU, worker CPU, round trips
(the reads the server processed); the commands by name that cost mimoq the most; how long
after its result's ``finished_at`` each callback arrived (median, p95); and with
``--by-script``, each script's calls and server time by name (``ScriptTimes``); with
``--profile``, for each phase, what kind of work the server's CPU went to (``perf record``
of its process; ``_server_profile.py``). ``--redis-config`` sets the server's configuration
(``CONFIG SET``) before both phases: what a setting changes, side by side with a run without it.
``--pairs N`` runs the two phases N times in turn on the same server and prints each pair's
figures and their medians before the last pair's report: on a shared host the bare phase's
Redis CPU (mostly the kernel's socket work) moves by 2-3x from one run to the next, so one
pair's CPU ratio says little. ``--redis-core N`` runs the server on CPU ``N`` alone and the
bench, its workers, the simulator and the receiver on the others (``sched_setaffinity``), as
a deployment gives Redis a core of its own: on a 2-core host otherwise the workers' Python
shares the server's core and its caches, and the server's user-space CPU per job grows.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections import Counter
from pathlib import Path
from typing import Any, Final

import redis as sync_redis
from _quota_fleet import Fleet, FleetSpec, stop_all
from _server_profile import ServerProfile, perf_problem, summary
from _support import Service, callback_delays, callbacks_received, cpu_s, run_child, run_sync_bench
from arq.connections import ArqRedis, RedisSettings, create_pool
from throughput import BARE_TASK, bare_worker

from mimoq.core import scripts, wire
from mimoq.core.settings import Settings, WorkerSettings

TENANTS = ("t-a", "t-b", "t-c")
REFUSE_MARK = "refuse-this-text"
DONE_TIMEOUT_S = 600.0
LOOPBACK = "127.0.0.0/8"
#: Commands the bench itself sends while a phase runs; not part of what a job costs. Its
#: polls are MGETs, which workers send too (the runner reads three keys with one per
#: pick): those are taken off by number, not by name (``job_commands``).
OWN_COMMANDS = frozenset(
    {"info", "config|resetstat", "config", "flushall", "ping", "client|info", "config|set"}
    | {"slowlog|get", "slowlog|reset"}  # --by-script's reads of the log
)


# --- the bare phase's worker child ------------------------------------------------------


async def bare_child(args: argparse.Namespace) -> dict[str, Any]:
    # stops once the queue is empty: the phase's end, without polling
    worker = bare_worker(args, burst=True)
    started = cpu_s()
    await worker.async_run()
    await worker.close()
    return {"cpu_s": cpu_s() - started, "complete": worker.jobs_complete}


# --- counting ---------------------------------------------------------------------------


def command_stats(client: sync_redis.Redis) -> tuple[Counter[str], Counter[str]]:
    """Each command's calls, and the server's microseconds in it, since the last reset (one
    ``INFO commandstats``: a script's row holds the commands it ran, and so do their own)."""
    stats = client.info("commandstats")
    rows = {name.removeprefix("cmdstat_"): v for name, v in stats.items()}
    calls = Counter({name: int(v["calls"]) for name, v in rows.items()})
    return calls, Counter({name: int(v["usec"]) for name, v in rows.items()})


def command_counts(client: sync_redis.Redis) -> Counter[str]:
    return command_stats(client)[0]


#: The scripts' calls: ``EVALSHA``, and ``FCALL`` of the limiter's function library.
SCRIPT_CALLS: Final = ("evalsha", "fcall")


def round_trips(client: sync_redis.Redis) -> int:
    """Reads the server has processed since the last reset: one per request batch a client
    sent (a pipeline is one), the unit of its network and syscall work."""
    return int(client.info("stats")["total_reads_processed"])


class ScriptTimes:
    """Each script's calls and server microseconds in a phase (``--by-script``), from
    ``SLOWLOG`` with every command logged, drained atomically (``MULTI``: ``GET``, ``RESET``)
    five times a second by a thread of its own. ``INFO commandstats`` has one row for every
    ``EVALSHA``; the log names the script (its SHA). Commands that scripts run (logged from
    the client ``?:0``) and the bench's own clients are left out."""

    def __init__(self, url: str, own: list[sync_redis.Redis]) -> None:
        self.client = sync_redis.Redis.from_url(url)
        self.own = {_text(c.client_info()["addr"]) for c in [*own, self.client]}
        self.names = {scripts.named(name).sha: name for name in scripts.SCRIPTS}
        self.names |= {
            scripts.in_library(name).name: name
            for name, preludes in scripts.SCRIPTS.items()
            if set(preludes) & scripts.LIBRARY_PRELUDES
        }
        self.calls: Counter[str] = Counter()
        self.usec: Counter[str] = Counter()
        # the server's own settings, put back by stop()
        self.saved = self.client.config_get("slowlog-*")
        self.client.config_set("slowlog-max-len", 100_000)
        self.client.config_set("slowlog-log-slower-than", 0)
        self._drain()  # what came before the phase
        self.drains = 1
        self.calls.clear()
        self.usec.clear()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.execute_command("SLOWLOG", "GET", "-1")
            pipe.execute_command("SLOWLOG", "RESET")
            entries, _ = pipe.execute()
        for _, _, usec, argv, addr, *_ in entries:
            if _text(addr) in self.own or _text(addr) == "?:0":
                continue
            name = _text(argv[0]).lower()
            if name in ("evalsha", "fcall"):  # a script by its SHA, a function by its name
                name = self.names.get(_text(argv[1]), "(other script)")
            else:
                name = "(commands outside scripts)"
            self.calls[name] += 1
            self.usec[name] += int(usec)

    def _run(self) -> None:
        while not self._stop.wait(0.2):  # a drain every 0.2 s keeps the log under its cap
            self._drain()
            self.drains += 1

    def stop(self) -> tuple[Counter[str], Counter[str]]:
        self._stop.set()
        self._thread.join()
        self._drain()
        self.drains += 1
        for name, value in self.saved.items():
            self.client.config_set(name, value)
        self.client.close()
        return self.calls, self.usec


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def redis_cpu(client: sync_redis.Redis) -> tuple[float, float]:
    """The server's CPU seconds so far: in all, and in user space (the rest is the kernel's,
    mostly its sockets: it grows with round trips, user space with the commands' work)."""
    cpu = client.info("cpu")
    user = float(cpu["used_cpu_user"])
    return float(cpu["used_cpu_sys"]) + user, user


def reset(client: sync_redis.Redis) -> tuple[float, float]:
    client.flushall()
    client.config_resetstat()
    return redis_cpu(client)


def cpu_since(client: sync_redis.Redis, start: tuple[float, float]) -> dict[str, float]:
    total, user = redis_cpu(client)
    return {"redis_cpu_s": total - start[0], "redis_user_s": user - start[1]}


def job_commands(counts: Counter[str], own_mgets: int = 0) -> Counter[str]:
    out = Counter({k: v for k, v in counts.items() if k not in OWN_COMMANDS})
    out["mget"] -= own_mgets
    return +out  # drops a zero count


# --- the mix ----------------------------------------------------------------------------


def write_clip(path: Path, seconds: float = 1.0, rate: int = 16_000) -> None:
    frames = int(seconds * rate)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x10" * frames)


def mix(n: int, rng: random.Random, clip: Path, hook: str) -> list[dict[str, Any]]:
    jobs = []
    for i in range(n):
        roll = rng.random()
        job: dict[str, Any]
        if roll < 0.80:
            job = {"kind": "speech", "input": f"Sentence number {i} of the cost bench."}
        elif roll < 0.95:
            job = {"kind": "transcription", "file": str(clip), "language": "en"}
        elif roll < 0.97:
            long_text = " ".join(f"This is sentence {k} of a long text." for k in range(90))
            job = {"kind": "speech", "input": long_text}
        else:
            job = {"kind": "speech", "input": f"{REFUSE_MARK} {i}"}
        job["id"] = f"job-{i}"
        job["tenant"] = TENANTS[i % len(TENANTS)]
        job["priority"] = "interactive" if rng.random() < 0.3 else "bulk"
        if rng.random() < 0.5:
            job["callback"] = {"url": hook}
        jobs.append(job)
    return jobs


class ResultsWatch:
    """Whether every job of ``ids`` has its final result, and its callback delivered.

    A job found done is not read again: the bench's polls are not a job's cost, and reading
    every record at each poll (3,000 records, 1.5 MB of replies, twice a second) cost the
    server about a tenth of the mix's Redis CPU, which ``INFO cpu`` cannot tell apart (the
    bare phase ends without polling). Each record is now read about once when it is final,
    and again only while its callback is pending."""

    def __init__(self, ids: list[str]) -> None:
        self.total = len(ids)
        self.waiting = list(ids)
        self.calls = 0  # the MGETs made

    def poll(self, client: sync_redis.Redis) -> tuple[int, int]:
        """(final results, callbacks still pending) after one more look."""
        still: list[str] = []
        pending = 0
        for start in range(0, len(self.waiting), 1000):
            chunk = self.waiting[start : start + 1000]
            self.calls += 1
            records = client.mget([wire.result_key(i) for i in chunk])
            for job_id, raw in zip(chunk, records, strict=True):
                if raw is None:
                    still.append(job_id)
                elif json.loads(raw).get("callback", {}).get("status") == "pending":
                    still.append(job_id)
                    pending += 1
        self.waiting = still
        return self.total - (len(still) - pending), pending


# --- phases -----------------------------------------------------------------------------


async def enqueue_bare(url: str, n: int) -> None:
    pool = await create_pool(
        RedisSettings.from_dsn(url), job_serializer=wire.serialize, job_deserializer=json.loads
    )
    try:
        for i in range(n):
            await pool.enqueue_job(BARE_TASK, _job_id=f"bare-{i}")
    finally:
        await pool.aclose()


async def enqueue_mimoq(url: str, settings: Settings, jobs: list[dict[str, Any]]) -> None:
    from mimoq.producer.client import Producer

    redis = ArqRedis.from_url(url)
    try:
        producer = Producer(redis, settings)
        for job in jobs:
            await producer.enqueue(job)
    finally:
        await redis.aclose()


def start_profile(
    args: argparse.Namespace, client: sync_redis.Redis, workdir: Path, phase: str
) -> ServerProfile | None:
    """``--profile``: sample the server for the phase (its pid from ``INFO server``)."""
    if not args.profile:
        return None
    pid = int(client.info("server")["process_id"])
    return ServerProfile(pid, workdir / f"{phase}.perf")


def phase_bare(args: argparse.Namespace, client: sync_redis.Redis, workdir: Path) -> dict[str, Any]:
    cpu0 = reset(client)
    profile = start_profile(args, client, workdir, "bare")
    asyncio.run(enqueue_bare(args.redis, args.jobs))
    argv = [sys.executable, __file__, "--child", "--redis", args.redis]
    argv += ["--jobs", str(args.jobs), "--concurrency", str(args.concurrency)]
    argv += ["--poll-delay", str(args.poll_delay)]
    report = run_child(argv, timeout_s=DONE_TIMEOUT_S)
    kinds = profile.stop() if profile is not None else None
    counts = job_commands(command_counts(client))
    return {
        "profile": kinds,
        "round_trips": round_trips(client),
        "counts": counts,
        **cpu_since(client, cpu0),
        "worker_cpu_s": report["cpu_s"],
        "problems": [] if report["complete"] == args.jobs else [f"{report['complete']} done"],
    }


def mix_settings(
    args: argparse.Namespace,
    redis_url: str,
    sim: Service,
    data_dir: Path,
    workdir: Path,
    secret: str,
) -> tuple[Settings, FleetSpec]:
    """The producer's settings and the workers' spec of the mix: limiter on (window 1 s,
    ``--rpm`` requests per model), callbacks to the loopback receiver, signed with ``secret``."""
    settings = Settings(
        mimo={"base_url": sim.url + "/v1"},
        redis_url=redis_url,
        storage={"data_dir": data_dir, "input_roots": str(workdir)},
        callbacks={"allow_networks": LOOPBACK},
    )
    spec = FleetSpec(
        redis_url=redis_url,
        mimo_base_url=sim.url + "/v1",
        data_dir=data_dir,
        window_s=1.0,
        concurrency=args.concurrency,
        poll_delay_s=args.poll_delay,
        limits=not args.no_limiter,
        extra_env=(
            ("MIMOQ_LIMIT_DEFAULT_RPM", str(args.rpm)),
            ("MIMOQ_CALLBACK_ALLOW_NETWORKS", LOOPBACK),
            ("MIMOQ_WEBHOOK_SECRET", secret),
        ),
    )
    return settings, spec


def phase_mimoq(
    args: argparse.Namespace,
    client: sync_redis.Redis,
    fleet: Fleet,
    sim: Service,
    receiver: Service,
    workdir: Path,
) -> dict[str, Any]:
    data_dir = workdir / "data"
    data_dir.mkdir(exist_ok=True)  # a later pair (--pairs) runs the same jobs again
    clip = workdir / "clip.wav"
    write_clip(clip)
    rng = random.Random(args.seed)
    jobs = mix(args.jobs, rng, clip, receiver.url + "/hook")
    with_callback = sum("callback" in j for j in jobs)
    settings, spec = mix_settings(args, args.redis, sim, data_dir, workdir, args.secret)
    received0 = callbacks_received(receiver)
    cpu0 = reset(client)
    monitor = start_monitor(args) if args.monitor else None
    by_script = ScriptTimes(args.redis, [client]) if args.by_script else None
    profile = start_profile(args, client, workdir, "mimoq")
    asyncio.run(enqueue_mimoq(args.redis, settings, jobs))
    workers = fleet.workers(args.workers, spec, "worker")
    worker_cpu0 = [w.cpu_s() or 0.0 for w in workers]
    ids = [j["id"] for j in jobs]
    watch = ResultsWatch(ids)
    deadline = time.monotonic() + DONE_TIMEOUT_S
    problems: list[str] = []
    try:
        while True:
            final, pending = watch.poll(client)
            delivered = callbacks_received(receiver) - received0
            if final == len(ids) and pending == 0:
                break
            if time.monotonic() > deadline:
                problems.append(f"{final} of {len(ids)} results, {pending} callbacks pending")
                break
            time.sleep(0.5)  # the interval between polls of the results (not a sync stand-in)
        own_mgets = watch.calls
        script_times = None
        if by_script is not None:
            script_times = by_script.stop()
        kinds = profile.stop() if profile is not None else None
        calls, usec = command_stats(client)
        counts = job_commands(calls, own_mgets)
        usec_by_command = job_commands(usec)
        # script calls and the server's microseconds in them (each call's Lua and commands)
        scripts_run = (sum(calls[n] for n in SCRIPT_CALLS), sum(usec[n] for n in SCRIPT_CALLS))
        if by_script is not None:  # its drains' transactions
            counts["multi"] -= by_script.drains
            counts["exec"] -= by_script.drains
        # each poll of the results is one MGET, and each drain of the log one pipeline
        trips = round_trips(client) - own_mgets - (by_script.drains if by_script else 0)
        server_cpu = cpu_since(client, cpu0)
        worker_cpu_s = sum(
            (w.cpu_s() or 0.0) - c for w, c in zip(workers, worker_cpu0, strict=True)
        )
    finally:
        stop_all(workers)
        if monitor is not None:
            monitor.terminate()
            monitor.wait()
    if delivered < with_callback:
        problems.append(f"the receiver got {delivered} callbacks for {with_callback} jobs")
    delays = sorted(callback_delays(receiver)[-delivered:] if delivered else [])
    return {
        "profile": kinds,
        "callback_delays": delays,
        "counts": counts,
        "round_trips": trips,
        "script_times": script_times,
        **server_cpu,
        "worker_cpu_s": worker_cpu_s,
        "problems": problems,
        "own_mgets": own_mgets,
        "scripts": scripts_run,
        "usec_by_command": usec_by_command,
    }


def start_monitor(args: argparse.Namespace) -> subprocess.Popen[bytes]:
    """``redis-cli MONITOR`` into ``args.monitor``: every command of the mimoq phase, with
    the ones scripts run marked ``lua``, to see where a job's commands come from."""
    port = args.redis.rsplit(":", 1)[1].split("/")[0]
    with open(args.monitor, "wb") as out:
        return subprocess.Popen(["redis-cli", "-p", port, "monitor"], stdout=out)


def print_report(args: argparse.Namespace, bare: dict[str, Any], mimoq: dict[str, Any]) -> bool:
    n = args.jobs
    rows = []
    for name, phase in (("bare arq", bare), ("mimoq mix", mimoq)):
        total = sum(phase["counts"].values())
        rows.append(
            (name, total / n, phase["redis_cpu_s"] * 1000 / n, phase["worker_cpu_s"] * 1000 / n)
        )
    limiter = "off" if args.no_limiter else f"on (window 1 s, {args.rpm}/model)"
    print(
        f"{n} jobs per phase; mimoq: {args.workers} `mimoq worker` x {args.concurrency}, limiter"
        f" {limiter}, 3 tenants, both lanes, 80/15/2/3 % speech/asr/long/"
        "refused, half with callbacks, 4 % upstream 429/500/503"
    )
    if args.redis_config:
        print("server configuration set for both phases: " + ", ".join(args.redis_config))
    if args.redis_core is not None:
        print(f"redis-server on CPU {args.redis_core} alone, everything else on the other CPUs")
    print(f"{'phase':<12}{'commands/job':>14}{'redis CPU ms/job':>18}{'worker CPU ms/job':>19}")
    for name, cmds, rcpu, wcpu in rows:
        print(f"{name:<12}{cmds:>14.1f}{rcpu:>18.3f}{wcpu:>19.3f}")
    (_, bc, br, bw), (_, mc, mr, mw) = rows
    print(
        f"mimoq / bare: commands {mc / bc:.1f}x, redis CPU {mr / br:.1f}x, "
        f"worker CPU {mw / bw:.1f}x"
    )
    bu, mu = bare["redis_user_s"] * 1000 / n, mimoq["redis_user_s"] * 1000 / n
    print(
        f"redis CPU ms/job in user space (the rest is the kernel's, its sockets above all): "
        f"bare {bu:.3f}, mimoq {mu:.3f} ({mu / bu:.1f}x)"
    )
    print(
        f"round trips per job (reads the server processed): bare {bare['round_trips'] / n:.1f}, "
        f"mimoq {mimoq['round_trips'] / n:.1f}"
    )
    top = mimoq["counts"].most_common(14)
    print("mimoq commands per job: " + ", ".join(f"{k} {v / n:.1f}" for k, v in top))
    spent = mimoq["usec_by_command"].most_common(10)
    print(
        "mimoq server us per job by command (a script's row holds the commands it ran; the "
        "bench's own polls are MGETs): " + ", ".join(f"{k} {v / n:.0f}" for k, v in spent)
    )
    calls, usec = mimoq["scripts"]
    if calls:
        print(
            f"mimoq scripts: {calls / n:.1f} calls per job (EVALSHA, FCALL), {usec / calls:.1f} "
            "us each (the "
            f"Lua and the commands it runs), {usec / 1e6 / mimoq['redis_cpu_s']:.0%} of Redis CPU"
        )
    if mimoq["script_times"] is not None:
        calls_by, usec_by = mimoq["script_times"]
        total = sum(usec_by.values())
        print(f"server time by script (--by-script, SLOWLOG): {total / n:.0f} us/job in all")
        print(f"  {'script':<28}{'calls/job':>10}{'us/call':>10}{'us/job':>9}{'share':>8}")
        for name, usec in usec_by.most_common(12):
            print(
                f"  {name:<28}{calls_by[name] / n:>10.2f}{usec / calls_by[name]:>10.1f}"
                f"{usec / n:>9.1f}{usec / total:>8.0%}"
            )
    for name, phase in (("bare arq", bare), ("mimoq mix", mimoq)):
        if phase["profile"] is not None:
            print(f"{name}: " + summary(*phase["profile"]))
    delays = mimoq["callback_delays"]
    if delays:
        median = delays[len(delays) // 2]
        p95 = delays[min(len(delays) - 1, len(delays) * 95 // 100)]
        print(
            f"mimoq callbacks: {len(delays)} received {median * 1000:.0f} ms (median), "
            f"{p95 * 1000:.0f} ms (p95) after their result's finished_at"
        )
    ok = True
    for name, phase in (("bare", bare), ("mimoq", mimoq)):
        for problem in phase["problems"]:
            ok = False
            print(f"PROBLEM in {name}: {problem}")
    return ok


def pair_figures(n: int, bare: dict[str, Any], mimoq: dict[str, Any]) -> tuple[float, ...]:
    """One pair's (mimoq commands/job, bare and mimoq Redis CPU ms/job, the CPU ratio, the
    same in user space)."""
    commands = sum(mimoq["counts"].values()) / n
    b, m = bare["redis_cpu_s"] * 1000 / n, mimoq["redis_cpu_s"] * 1000 / n
    bu, mu = bare["redis_user_s"] * 1000 / n, mimoq["redis_user_s"] * 1000 / n
    return commands, b, m, m / b, bu, mu, mu / bu


def print_pairs(n: int, pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    """--pairs: every pair's figures, then the median of each column."""
    rows = [pair_figures(n, bare, mimoq) for bare, mimoq in pairs]
    head = ("mimoq cmds", "bare CPU", "mimoq CPU", "ratio", "bare user", "mimoq user", "ratio")
    print(f"{len(pairs)} pairs, Redis CPU in ms per job (user: user space only)")
    print(f"{'pair':<8}" + "".join(f"{h:>12}" for h in head))
    for i, row in enumerate(rows, 1):
        print(f"{i:<8}" + "".join(f"{v:>12.3f}" for v in row))
    medians = [statistics.median(column) for column in zip(*rows, strict=True)]
    print(f"{'median':<8}" + "".join(f"{v:>12.3f}" for v in medians))
    print()


def core_problem(core: int) -> str | None:
    """Why ``--redis-core`` cannot give CPU ``core`` to the server alone here, or None."""
    cpus = os.sched_getaffinity(0)
    if core not in cpus:
        return f"--redis-core {core}: this process may run on CPUs {sorted(cpus)} only"
    if len(cpus) < 2:
        return "--redis-core needs 2 CPUs at least: the server's, and one for the rest"
    return None


def add_mix_arguments(parser: argparse.ArgumentParser, *, jobs: int) -> None:
    """The mix's options (``mix``, ``mix_settings``), for every bench that runs it."""
    parser.add_argument("--jobs", type=int, default=jobs)
    parser.add_argument("--workers", type=int, default=2, help="mimoq worker processes")
    parser.add_argument("--concurrency", type=int, default=32, help="jobs in flight per worker")
    parser.add_argument(
        "--poll-delay", type=float, default=WorkerSettings.model_fields["poll_delay_s"].default
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rpm", type=int, default=400, help="limiter requests per 1 s window")
    parser.add_argument(
        "--no-limiter",
        action="store_true",
        help="run the mix with the limiter off: what its decisions cost is the difference",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_mix_arguments(parser, jobs=3000)
    parser.add_argument(
        "--monitor", type=Path, help="write redis-cli MONITOR of the mimoq phase to this file"
    )
    parser.add_argument(
        "--by-script",
        action="store_true",
        help="time each script of the mimoq phase by name (SLOWLOG: adds its own Redis CPU)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the server with perf in each phase: its CPU by kind of work (Lua, "
        "float <-> text, lookups, memory, ...)",
    )
    parser.add_argument(
        "--redis-config",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="CONFIG SET on the server before both phases (repeatable), e.g. "
        "zset-max-listpack-entries=0",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=1,
        help="run the two phases this many times in turn; print each pair and the medians",
    )
    parser.add_argument(
        "--redis-core",
        type=int,
        metavar="N",
        help="run redis-server on CPU N alone, everything else on the other CPUs",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.redis_core is not None and (problem := core_problem(args.redis_core)) is not None:
        parser.error(problem)
    if args.profile and (problem := perf_problem()) is not None:
        parser.error(problem)
    for item in args.redis_config:
        if "=" not in item.strip("="):
            parser.error(f"--redis-config takes NAME=VALUE (a redis.conf setting), got {item!r}")
    if args.child:
        print(json.dumps(asyncio.run(bare_child(args))))
        return 0
    args.secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    faults = json.dumps([{"kind": "status", "status": 400, "match": REFUSE_MARK, "times": None}])
    with tempfile.TemporaryDirectory(prefix="mimoq-cost-") as tmp, Fleet(Path(tmp)) as fleet:
        redis = fleet.redis()
        args.redis = redis.url
        if args.redis_core is not None:
            # everything started from here on (simulator, receiver, workers, the bare
            # phase's child) inherits this process's CPUs
            others = os.sched_getaffinity(0) - {args.redis_core}
            # every thread of the server: an affinity set by pid holds for its main thread only
            for thread in os.listdir(f"/proc/{redis.process.pid}/task"):
                os.sched_setaffinity(int(thread), {args.redis_core})
            os.sched_setaffinity(0, others)
        sim = fleet.simulator(
            "--fail-rate",
            "0.04",
            "--fail-statuses",
            "429,500,503",
            "--faults",
            faults,
            "--seed",
            str(args.seed),
        )
        receiver = fleet.receiver()
        client = sync_redis.Redis.from_url(redis.url)
        for item in args.redis_config:
            name, value = item.split("=", 1)
            client.config_set(name, value)
        pairs = []
        try:
            for _ in range(max(1, args.pairs)):
                bare = phase_bare(args, client, Path(tmp))
                mimoq = phase_mimoq(args, client, fleet, sim, receiver, Path(tmp))
                pairs.append((bare, mimoq))
        finally:
            client.close()
    if len(pairs) > 1:
        print_pairs(args.jobs, pairs)
    ok = True
    for i, (bare, mimoq) in enumerate(pairs[:-1], 1):  # the last pair's are in its report
        for problem in bare["problems"] + mimoq["problems"]:
            ok = False
            print(f"PROBLEM in pair {i}: {problem}")
    return 0 if print_report(args, *pairs[-1]) and ok else 1


if __name__ == "__main__":
    sys.exit(run_sync_bench(main))
