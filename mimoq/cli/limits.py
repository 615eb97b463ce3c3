"""``mimoq limits``: print every fleet limiter's state as JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import replace
from typing import Any

from mimoq.core.connections import connect
from mimoq.core.keypool import key_pool
from mimoq.core.settings import Settings
from mimoq.worker.accounts.breaker import read_paused
from mimoq.worker.capacity import required_concurrency
from mimoq.worker.limiter import LimiterSnapshot, RedisLimiter
from mimoq.worker.limiter.config import LimiterConfig
from mimoq.worker.limiter.observed_capacity import demand_from_snapshot


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``mimoq limits`` to the command's subparsers."""
    parser = sub.add_parser(
        "limits",
        help="show the fleet-wide MiMo quota limiters (JSON)",
        description="Configured and effective rate, recent use, cool-down, in-flight leases and "
        "queued tickets of each model's limiter, shared by every worker on this Redis.",
    )
    parser.add_argument(
        "--model", action="append", dest="models", metavar="MODEL",
        help="only this model (repeatable); default: every MiMo audio model and configured one",
    )  # fmt: skip
    parser.set_defaults(func=run)


def _with_capacity(snapshot: LimiterSnapshot) -> dict[str, Any]:
    out = snapshot.to_dict()
    demand = demand_from_snapshot(snapshot)
    if demand is not None:
        # Little's law: worker slots the fleet needs for this model alone
        out["concurrency_needed"] = required_concurrency(demand.requests_per_s, demand.latency_s)
    return out


async def _collect(settings: Settings, models: list[str] | None) -> dict[str, Any]:
    config = LimiterConfig.from_settings(settings)
    # Every account of the key pool has its own limiter (the first is shown at the top level
    # too, as before the pool); with no key, the configured or anonymous account.
    names = [a.name for a in key_pool(settings)] or [config.account]
    redis = connect(settings)
    try:
        per_account = []
        for name in names:
            limiter = RedisLimiter(replace(config, account=name), redis)
            snapshots = [await limiter.snapshot(m) for m in models or config.models()]
            per_account.append(
                {"account": name, "limiters": [_with_capacity(s) for s in snapshots]}
            )
        paused = [p.to_dict() for p in await read_paused(redis)]
    finally:
        await redis.aclose()
    return {
        "enabled": True,
        "account": names[0],
        "window_s": config.window_s,
        "target": config.target,
        "limiters": per_account[0]["limiters"],
        "accounts": per_account,
        "accounts_paused": paused,
    }


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print the limiters' state; exit code 0."""
    if not settings.limiter.enabled:
        print(json.dumps({"enabled": False}))
        return 0
    print(json.dumps(asyncio.run(_collect(settings, args.models)), indent=2, ensure_ascii=False))
    return 0
