"""``mimoq doctor``: check every configured MiMo key and say what to fix."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict

import httpx

from mimoq.core.errors import ConfigurationError
from mimoq.core.keypool import PoolAccount, PoolKey, key_pool, no_key_error
from mimoq.core.settings import Settings
from mimoq.worker.accounts.key_checks import Check, CheckOutcome, KeyReport, diagnose


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``mimoq doctor [--json] [--probe]`` to the command's subparsers."""
    parser = sub.add_parser(
        "doctor",
        help="check every configured key: host family, region, network, models (exit 1 if "
        "any key is unusable)",
        description="For each key (fingerprints only): prefix and host family agree, tp- keys "
        "have a region, the host resolves and accepts TLS connections, GET /v1/models answers "
        "and lists the TTS and ASR models. Failures come with a likely cause and a fix.",
    )
    parser.add_argument("--json", action="store_true", help="JSON even on a terminal")
    parser.add_argument(
        "--probe", action="store_true", help="also make one tiny TTS call per key (costs a call)"
    )
    parser.set_defaults(func=run, on_configuration_error=configuration_failed)


def _accounts(settings: Settings) -> list[PoolAccount]:
    accounts = key_pool(settings)
    if accounts:
        return accounts
    if settings.mimo.base_url is None:
        raise no_key_error()
    # No key but a base URL (a simulator): check the connection without one.
    anonymous = PoolKey(
        source="none", secret="", fingerprint="anonymous", family="payg", region=None,
        base_url=settings.mimo.base_url, base_url_explicit=True,
    )  # fmt: skip
    return [PoolAccount(name="anonymous", keys=(anonymous,))]


async def _diagnose(
    settings: Settings, accounts: list[PoolAccount], probe: bool
) -> list[KeyReport]:
    timeout = httpx.Timeout(
        min(settings.mimo.request_timeout_s, 30), connect=settings.mimo.connect_timeout_s
    )
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as http:
        return await diagnose(http, accounts, probe=probe)


def render(reports: list[KeyReport]) -> str:
    """A readable report: one block per key, one line per check, cause and fix under failures."""
    lines: list[str] = []
    for r in reports:
        verdict = "usable" if r.usable else "UNUSABLE"
        lines.append(f"{r.source}  {r.fingerprint}  account {r.account}  {r.base_url}  {verdict}")
        for c in r.checks:
            lines.append(f"  [{c.outcome.value:4}] {c.check}: {c.detail}")
            if c.outcome is not CheckOutcome.OK and c.cause:
                lines.append(f"         cause: {c.cause}")
                lines.append(f"         fix:   {c.fix}")
    return "\n".join(lines)


def _as_json(args: argparse.Namespace) -> bool:
    return bool(args.json) or not sys.stdout.isatty()


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print the report; exit 0 when every key is usable, 1 when any is not, 2 when the
    configuration cannot work (no key at all, a value refused)."""
    try:
        accounts = _accounts(settings)
    except ConfigurationError as exc:
        return configuration_failed(args, exc)
    reports = asyncio.run(_diagnose(settings, accounts, args.probe))
    usable = sum(r.usable for r in reports)
    if _as_json(args):
        body = {"usable": usable, "unusable": len(reports) - usable, "configuration": [],
                "keys": [r.to_dict() for r in reports]}  # fmt: skip
        print(json.dumps(body, indent=2, ensure_ascii=False))
    else:
        print(render(reports))
    return 0 if usable == len(reports) else 1


def configuration_failed(args: argparse.Namespace, error: ConfigurationError) -> int:
    """A configuration that cannot work, reported like a failed check (in JSON: a document
    a script can read, its finding under ``configuration``); exit 2. The one-line error
    goes to stderr either way, as every command prints it."""
    finding = Check(
        "configuration", CheckOutcome.FAIL, error.message, cause=error.cause,
        fix=error.fix or "correct the setting named in the cause and run `mimoq doctor` again",
    )  # fmt: skip
    if _as_json(args):
        body = {"usable": 0, "unusable": 0, "configuration": [asdict(finding)], "keys": []}
        print(json.dumps(body, indent=2, ensure_ascii=False))
    else:
        print(f"configuration  UNUSABLE\n  [fail] {finding.detail}\n         fix:   {finding.fix}")
    print(f"mimoq: {error.error_type}: {error.message}", file=sys.stderr)
    return 2
