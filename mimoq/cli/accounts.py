"""``mimoq accounts``: the paused MiMo accounts, and resuming one by hand."""

from __future__ import annotations

import argparse
import asyncio
import json

from mimoq.core.connections import connect
from mimoq.core.keypool import key_pool
from mimoq.core.settings import Settings
from mimoq.worker.accounts.breaker import read_paused, resume_by_hand


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``mimoq accounts [list|resume ACCOUNT]`` to the command's subparsers."""
    parser = sub.add_parser(
        "accounts",
        help="the configured MiMo accounts and which are paused; resume one by hand",
        description="Accounts are paused fleet-wide by their circuit breaker (401/402/403, "
        "persistent 429s) and resumed by the first successful probe, or here.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.add_parser("list", help="configured accounts and paused ones (JSON; the default)")
    resume = actions.add_parser("resume", help="clear an account's pause now")
    resume.add_argument("account", help="the account's name or key fingerprint")
    parser.set_defaults(func=run, action="list")


async def _list(settings: Settings) -> dict[str, object]:
    redis = connect(settings)
    try:
        paused = [p.to_dict() for p in await read_paused(redis)]
    finally:
        await redis.aclose()
    configured = [
        {"account": a.name, "keys": [{"source": k.source, "fingerprint": k.fingerprint,
                                      "base_url": k.base_url} for k in a.keys]}
        for a in key_pool(settings)
    ]  # fmt: skip
    return {"configured": configured, "paused": paused}


async def _resume(settings: Settings, account: str) -> bool:
    redis = connect(settings)
    try:
        return await resume_by_hand(redis, account)
    finally:
        await redis.aclose()


def run(args: argparse.Namespace, settings: Settings) -> int:
    """``list``: print JSON, exit 0. ``resume``: exit 0 if it was paused, 1 if it was not."""
    if args.action == "resume":
        was_paused = asyncio.run(_resume(settings, args.account))
        print(json.dumps({"account": args.account, "resumed": was_paused}))
        return 0 if was_paused else 1
    print(json.dumps(asyncio.run(_list(settings)), indent=2, ensure_ascii=False))
    return 0
