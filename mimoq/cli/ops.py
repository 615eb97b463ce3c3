"""``mimoq health`` (exit 0/1 from the workers' heartbeats) and ``mimoq inspect`` (fleet state)."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from redis.exceptions import RedisError

from mimoq.cli.inspection import inspect, render
from mimoq.cli.report_output import print_fleet_report
from mimoq.core.connections import connect
from mimoq.core.settings import Settings
from mimoq.worker.accounts.breaker import read_paused
from mimoq.worker.heartbeat import read_beats


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``mimoq health`` and ``mimoq inspect`` to the command's subparsers."""
    health = sub.add_parser(
        "health",
        help="exit 0 if enough workers beat recently, else 1 (JSON on stdout)",
        description="Reads every worker's heartbeat record from Redis. A worker counts when "
        "its last beat is recent enough and it is not draining (shutting down).",
    )
    health.add_argument(
        "--min-workers", type=int, default=1, metavar="N", help="live workers needed (default 1)"
    )
    health.add_argument(
        "--max-age-s", type=float, metavar="S",
        help="a beat older than this does not count (default: each record's TTL, 3 intervals)",
    )  # fmt: skip
    health.add_argument(
        "--host", metavar="NAME", help="count only workers on this host (e.g. in a container)"
    )
    health.add_argument(
        "--strict", action="store_true",
        help="also exit 1 while a MiMo account is paused (out of funds, revoked key, ...)",
    )  # fmt: skip
    health.set_defaults(func=run_health)

    inspect_parser = sub.add_parser(
        "inspect",
        help="queue depth, deferred and in-flight jobs, failures, dead letters, workers, limits",
        description="Reads the fleet's state from Redis (SCAN, never KEYS). JSON when stdout "
        "is not a terminal (or with --json), a readable table when it is.",
    )
    inspect_parser.add_argument(
        "--limit", type=int, default=10, metavar="N", help="rows per list (default 10)"
    )
    inspect_parser.add_argument("--json", action="store_true", help="JSON even on a terminal")
    inspect_parser.set_defaults(func=run_inspect)


async def health_report(
    settings: Settings, *, min_workers: int, max_age_s: float | None, host: str | None
) -> dict[str, Any]:
    """Which workers count as live now, and whether there are enough of them."""
    redis = connect(settings)
    try:
        beats = await read_beats(redis)
        paused = [p.to_dict() for p in await read_paused(redis)]
    finally:
        await redis.aclose()
    now = time.time()
    workers = [
        {
            "worker_id": b.worker_id,
            "host": b.host,
            "age_s": round(b.age_s(now), 3),
            "draining": b.draining,
            "in_flight": b.in_flight,
            "live": b.live(now, max_age_s=max_age_s),
        }
        for b in beats
        if host is None or b.host == host
    ]
    live = sum(1 for w in workers if w["live"])
    return {"healthy": live >= min_workers, "live": live, "required": min_workers,
            "workers": workers, "accounts_paused": paused}  # fmt: skip


def run_health(args: argparse.Namespace, settings: Settings) -> int:
    """Print the health report; exit 0 when healthy, 1 otherwise (also when Redis is down)."""
    try:
        report = asyncio.run(
            health_report(
                settings, min_workers=args.min_workers, max_age_s=args.max_age_s, host=args.host
            )
        )
    except (RedisError, OSError) as exc:
        report = {"healthy": False, "error": f"redis: {type(exc).__name__}: {exc}"}
    if args.strict and report.get("accounts_paused"):
        report["healthy"] = False  # --strict: a paused account is unhealthy too
    print(json.dumps(report, ensure_ascii=False))
    return 0 if report["healthy"] else 1


async def _inspect(settings: Settings, limit: int) -> dict[str, Any]:
    redis = connect(settings)
    try:
        return await inspect(redis, settings, limit=limit)
    finally:
        await redis.aclose()


def run_inspect(args: argparse.Namespace, settings: Settings) -> int:
    """Print the fleet's state; exit 1 if Redis cannot be read."""
    return print_fleet_report(_inspect(settings, max(0, args.limit)), render, as_json=args.json)
