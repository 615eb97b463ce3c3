"""What one limiter grant costs the server with a real run's state: a saved mid-run state,
its ticket holders' grants replayed side by side for each lease-id length.

    python bench/grant_replay.py [--save-after 2500] [--rounds 4] [--lease-hex 32 80]
                                 [bench/redis_cost.py's mix options: --jobs 3000 --rpm 100 ...]

1. ``bench/redis_cost.py``'s mix runs on a private redis-server (its workers, simulator
   and receiver), at 100 requests a model per 1 s window by default (``--rpm``): a grant
   log of up to 100 grants, as a model's at MiMo's real quota. Once the server has run
   ``--save-after`` calls of the limiter's functions (``FCALL``), a thread saves its
   dataset (``SAVE``); the mix then runs to its end.
2. For each lease-id length in turn (the order reversed every round), a fresh
   redis-server loads that snapshot and every ticket holder of the speech model's bulk
   lane asks for its grant, in slot order, as its worker would: the limiter of the mix's
   workers (their settings), its clock at each slot (the snapshot's times; Redis TIME
   would be seconds past them, and housekeeping would empty the log). The server's own
   microseconds (``INFO commandstats``): each call's, the commands' it ran, and the
   commands that took most. The lease ids are the limiter's own (``new_lease_id``) at each
   length, and the leases of the saved state get fresh ids of that length first (the mix
   ran at one length: its sets are encoded for it).

The mix's Redis CPU moves by more than a grant's share from run to run; the replay asks
the same questions of the same state, so a change to a decision's cost shows here first.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import redis as sync_redis
from _quota_fleet import Fleet, FleetSpec
from _support import Services, run_sync_bench
from redis.asyncio import Redis
from redis_cost import REFUSE_MARK, add_mix_arguments, mix_settings, phase_mimoq

from mimoq.core.dialect_constants import TTS_MODEL
from mimoq.core.errors import CapacityDeferred
from mimoq.core.settings import Settings
from mimoq.worker.limiter import RedisLimiter
from mimoq.worker.limiter import core as limiter_core
from mimoq.worker.limiter.config import KEY_PARTS, LimiterConfig, limiter_keys

#: commandstats rows that are not the replayed calls' own commands
_NOT_INNER = frozenset({"cmdstat_fcall", "cmdstat_config|resetstat", "cmdstat_function|load"})


@dataclass(frozen=True)
class Replay:
    """One replay: calls, the server's microseconds in them and in their commands, the
    commands per call, and the commands that took most (name, microseconds a call)."""

    calls: int
    granted: int
    usec: int
    inner_usec: int
    inner_calls: int
    top: tuple[tuple[str, float], ...]
    #: the grants in the speech model's log when the replay began, and its encoding then
    log_size: int = 0
    log_encoding: str = ""


class Saver:
    """Saves the server's dataset to ``rdb`` once it has run ``after`` limiter calls (a
    thread of its own polling ``INFO commandstats``)."""

    def __init__(self, url: str, after: int, rdb: Path) -> None:
        self._client = sync_redis.Redis.from_url(url)
        self._after = after
        self._rdb = rdb
        self.saved = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):  # the poll of a counter, not a sync stand-in
            row = self._client.info("commandstats").get("cmdstat_fcall") or {}
            if int(row.get("calls", 0)) >= self._after:
                self._client.save()
                folder = self._client.config_get("dir")["dir"]
                name = self._client.config_get("dbfilename")["dbfilename"]
                shutil.copyfile(Path(folder) / name, self._rdb)
                self.saved = True
                return

    def stop(self) -> bool:
        """Stop polling; whether the dataset was saved."""
        self._stop.set()
        self._thread.join()
        self._client.close()
        return self.saved


def worker_limiter_config(spec: FleetSpec) -> LimiterConfig:
    """The limiter configuration the mix's workers read from their environment."""
    with mock.patch.dict(os.environ, spec.env(), clear=True):
        return LimiterConfig.from_settings(Settings())


@contextlib.contextmanager
def lease_ids(hex_digits: int) -> Iterator[None]:
    """The limiter's lease ids, ``hex_digits`` long, while the block runs."""
    with mock.patch.object(
        limiter_core, "new_lease_id", lambda: secrets.token_hex(hex_digits // 2)
    ):
        yield


async def rekey_leases(redis: Redis, keys: dict[str, str], hex_digits: int) -> None:
    """Give every lease of the loaded state a fresh id ``hex_digits`` long, in each set and
    hash keyed by lease (scores, values and TTLs kept): the state's sets are then encoded
    as the limiter makes them at that length, whatever length the mix ran with."""
    new: dict[bytes, str] = {}

    def renamed(lease: bytes) -> str:
        return new.setdefault(lease, secrets.token_hex(hex_digits // 2))

    for part in ("log", "ilog", "leases"):
        members = await redis.zrange(keys[part], 0, -1, withscores=True)
        ttl = await redis.pttl(keys[part])
        await redis.delete(keys[part])
        if members:
            await redis.zadd(keys[part], {renamed(m): score for m, score in members})
            if ttl > 0:
                await redis.pexpire(keys[part], ttl)
    charged = await redis.hgetall(keys["tokens"])
    ttl = await redis.pttl(keys["tokens"])
    await redis.delete(keys["tokens"])
    if charged:
        await redis.hset(keys["tokens"], mapping={renamed(k): v for k, v in charged.items()})
        if ttl > 0:
            await redis.pexpire(keys["tokens"], ttl)


async def replay(url: str, config: LimiterConfig, hex_digits: int) -> Replay:
    """Every bulk speech ticket holder of the loaded state asks for its grant at its slot."""
    redis = Redis.from_url(url)
    clock = [0.0]
    limiter = RedisLimiter(config, redis, clock=lambda: clock[0])
    keys = dict(zip(KEY_PARTS, limiter_keys(config.account, TTS_MODEL), strict=True))
    await rekey_leases(redis, keys, hex_digits)
    log_size = int(await redis.zcard(keys["log"]))
    encoding = (await redis.object("encoding", keys["log"])) or b"(none)"
    tickets = await redis.zrange(keys["bulk_tickets"], 0, -1, withscores=True)
    if not tickets:
        await redis.aclose()
        raise SystemExit("the saved state holds no bulk speech ticket: try another --save-after")
    tenants = await redis.hgetall(keys["ticket_tenant"])
    # the library as this checkout has it (the snapshot holds the one the mix loaded)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.execute_command("FUNCTION", "FLUSH")
        limiter_core._limiter_script("acquire").queue_load(pipe)
        await pipe.execute()
    await redis.config_resetstat()
    granted = 0
    with lease_ids(hex_digits):
        for job, slot in tickets:
            field = (tenants.get(job) or b"bulk:_").decode()
            tenant = field.partition(":")[2]
            clock[0] = slot + 0.001
            try:
                await limiter.acquire(
                    TTS_MODEL,
                    job_id=job.decode(),
                    lane="bulk",
                    tenant=None if tenant == "_" else tenant,
                )
                granted += 1
            except CapacityDeferred:
                pass
    stats: dict[str, Any] = await redis.info("commandstats")
    await redis.aclose()
    fcall = stats["cmdstat_fcall"]
    calls = int(fcall["calls"])
    inner = {k: v for k, v in stats.items() if k not in _NOT_INNER}
    top = sorted(
        ((v["usec"] / calls, k.removeprefix("cmdstat_")) for k, v in inner.items()), reverse=True
    )
    return Replay(
        calls=calls,
        granted=granted,
        usec=int(fcall["usec"]),
        inner_usec=sum(int(v["usec"]) for v in inner.values()),
        inner_calls=sum(int(v["calls"]) for v in inner.values()),
        top=tuple((name, us) for us, name in top[:5]),
        log_size=log_size,
        log_encoding=encoding.decode() if isinstance(encoding, bytes) else str(encoding),
    )


def take_snapshot(args: argparse.Namespace, workdir: Path) -> tuple[Path, LimiterConfig]:
    """Run the mix and save its server's state after ``--save-after`` limiter calls; the
    saved dataset, and the workers' limiter configuration."""
    args.secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    args.monitor, args.by_script, args.profile = None, False, False
    faults = json.dumps([{"kind": "status", "status": 400, "match": REFUSE_MARK, "times": None}])
    (workdir / "mix").mkdir()
    with Fleet(workdir / "mix") as fleet:
        server = fleet.redis()
        args.redis = server.url
        sim = fleet.simulator("--fail-rate", "0.04", "--fail-statuses", "429,500,503",
                              "--faults", faults, "--seed", str(args.seed))  # fmt: skip
        receiver = fleet.receiver()
        _, spec = mix_settings(args, server.url, sim, workdir / "data", workdir, args.secret)
        client = sync_redis.Redis.from_url(server.url)
        rdb = workdir / "snapshot.rdb"
        saver = Saver(server.url, args.save_after, rdb)
        try:
            result = phase_mimoq(args, client, fleet, sim, receiver, workdir)
        finally:
            saved = saver.stop()
            client.close()
    for problem in result["problems"]:
        print(f"PROBLEM in the mix: {problem}")
    if not saved:
        raise SystemExit(
            f"the mix ended before {args.save_after} limiter calls: lower --save-after"
        )
    return rdb, worker_limiter_config(spec)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_mix_arguments(parser, jobs=3000)
    # a grant log of up to 100 grants, as a model's at MiMo's real quota (100 calls a minute)
    parser.set_defaults(rpm=100)
    parser.add_argument(
        "--save-after", type=int, default=2500, help="limiter calls before the save"
    )
    parser.add_argument("--rounds", type=int, default=4, help="replays of each lease-id length")
    parser.add_argument(
        "--lease-hex", type=int, nargs=2, default=[32, 80], metavar=("BEFORE", "AFTER"),
        help="the lease-id lengths compared (hex digits, even)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.no_limiter:
        parser.error("the replay asks the limiter: --no-limiter leaves nothing to replay")
    if any(n < 2 or n % 2 for n in args.lease_hex):
        parser.error("--lease-hex takes even lengths of at least 2 hex digits")
    with tempfile.TemporaryDirectory(prefix="mimoq-replay-") as tmp:
        workdir = Path(tmp)
        snapshot, config = take_snapshot(args, workdir)
        totals: dict[int, list[Replay]] = {n: [] for n in args.lease_hex}
        for round_no in range(args.rounds):
            order = args.lease_hex if round_no % 2 == 0 else list(reversed(args.lease_hex))
            for hex_digits in order:
                folder = workdir / f"replay-{round_no}-{hex_digits}"
                folder.mkdir()
                with Services(folder) as services:
                    server = services.redis(rdb=snapshot)
                    totals[hex_digits].append(asyncio.run(replay(server.url, config, hex_digits)))
    first = totals[args.lease_hex[0]][0]
    print(
        f"the mix's state saved after {args.save_after} limiter calls; {first.calls} bulk speech "
        f"ticket holders asked at their slots, {args.rounds} rounds of each lease-id length in turn"
    )
    print(
        f"the speech model's grant log held {first.log_size} grants, a "
        + ", ".join(f"{runs[-1].log_encoding} ({n} hex)" for n, runs in totals.items())
    )
    print(
        f"{'lease id':<14}{'us/call':>10}{'commands us':>14}{'commands':>10}{'granted':>9}"
        "  top commands, us a call (last round)"
    )
    per_call = {}
    for hex_digits, runs in totals.items():
        calls = sum(r.calls for r in runs)
        per_call[hex_digits] = sum(r.usec for r in runs) / calls
        top = ", ".join(f"{name} {us:.1f}" for name, us in runs[-1].top)
        print(
            f"{f'{hex_digits} hex':<14}{per_call[hex_digits]:>10.1f}"
            f"{sum(r.inner_usec for r in runs) / calls:>14.1f}"
            f"{sum(r.inner_calls for r in runs) / calls:>10.1f}{runs[-1].granted:>9}  {top}"
        )
    before, after = args.lease_hex
    print(
        f"{after} hex / {before} hex, server us a call: {per_call[after] / per_call[before]:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_sync_bench(main))
