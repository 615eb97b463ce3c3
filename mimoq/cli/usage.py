"""``mimoq usage``: usage per tenant and model, and each tenant's use of its limits."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from typing import Any

from mimoq.cli.inspection import _table
from mimoq.cli.report_output import print_fleet_report
from mimoq.core.connections import connect
from mimoq.core.settings import Settings
from mimoq.core.tenant_limits import USAGE_METRICS, parse_duration
from mimoq.core.usage_windows import usage_report


def _duration(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``mimoq usage`` to the command's subparsers."""
    parser = sub.add_parser(
        "usage",
        help="usage per tenant and model, and tenants' limits (MIMOQ_TENANT_LIMITS)",
        description="Requests, failed jobs, audio seconds sent and produced, characters spoken "
        "and tokens, per tenant and model, summed from hour windows (day windows past 7 days) "
        "that overlap --since; then each tenant's use of its limits in their current windows. "
        "A table on a terminal, JSON otherwise or with --json.",
    )
    parser.add_argument("--tenant", metavar="T", help="only this tenant ('_': jobs naming none)")
    parser.add_argument(
        "--since", type=_duration, default=86_400, metavar="DURATION",
        help="how far back: 90m, 24h (the default), 7d, ...",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="JSON even on a terminal")
    parser.set_defaults(func=run)


async def _collect(settings: Settings, tenant: str | None, since_s: int) -> dict[str, Any]:
    redis = connect(settings)
    try:
        return await usage_report(
            redis, settings.usage.limits(), since_s=since_s, now=time.time(),
            tenant=tenant, only_tenant=tenant is not None,
        )  # fmt: skip
    finally:
        await redis.aclose()


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def render(report: dict[str, Any]) -> str:
    """The report as aligned plain-text tables."""
    lines = [f"usage from {_clock(report['from'])} to {_clock(report['until'])}"]
    lines += _table(
        ["tenant", "model", *USAGE_METRICS],
        ([r["tenant"], r["model"], *(r[m] for m in USAGE_METRICS)] for r in report["usage"]),
    )
    lines += ["", "limits (current windows)"]
    lines += _table(
        ["tenant", "limit", "used", "frees at", "state"],
        (
            [
                r["tenant"], f"{r['metric']}={r['limit']:g}/{r['window']}", f"{r['used']:g}",
                _clock(r["frees_at"]), "held" if r["held"] else "ok",
            ]
            for r in report["limits"]
        ),
    )  # fmt: skip
    return "\n".join(lines)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print the report; exit 1 if Redis cannot be read."""
    return print_fleet_report(
        _collect(settings, args.tenant, args.since), render, as_json=args.json
    )
