"""``mimoq cancel``: withdraw jobs by id, or a tenant's queued work (docs/cancel.md).

``mimoq batch cancel RUN`` (a run's unfinished jobs) is dispatched from ``cli/batch.py``
and shares :func:`print_answers`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from mimoq.core.connections import connect
from mimoq.core.settings import Settings
from mimoq.producer.cancel import CancelAnswer, CancelStatus, cancel_jobs, cancel_tenant

#: Exit status when an id (or a tenant or run name) was malformed.
EXIT_MALFORMED = 2


def register(sub: Any) -> None:
    cancel = sub.add_parser(
        "cancel",
        help="cancel jobs by id, or a tenant's queued work (--tenant)",
        description="Cancel jobs: queued ones are recorded as cancelled at once and never "
        "sent; one in flight has its MiMo call closed within 2 s. Prints one JSON object per "
        'id: {"id", "status"} with status cancelled, already_finished (and its job_status), '
        "not_found or invalid. Exits 2 if an id was malformed, else 0.",
    )
    cancel.add_argument("ids", nargs="*", metavar="ID", help="job ids ('-': read them from stdin)")
    cancel.add_argument(
        "--tenant", help="operators: cancel every queued job of this tenant ('_': no tenant)"
    )
    cancel.add_argument("--model", help="with --tenant: only this model's jobs")
    cancel.set_defaults(func=_cancel)


def print_answers(answers: list[CancelAnswer]) -> int:
    """One JSON line per answer on stdout, the counts on stderr; the exit status."""
    for answer in answers:
        print(json.dumps(answer.to_dict()))
    counts = Counter(a.status.value for a in answers)
    print(json.dumps({"counts": dict(counts)}), file=sys.stderr)
    return EXIT_MALFORMED if counts[CancelStatus.invalid.value] else 0


def run_cancel(settings: Settings, action: Callable[[Redis], Awaitable[list[CancelAnswer]]]) -> int:
    """Run ``action`` on a fresh connection and print its answers."""

    async def run() -> list[CancelAnswer]:
        redis = connect(settings)
        try:
            return await action(redis)
        finally:
            await redis.aclose()

    try:
        answers = asyncio.run(run())
    except ValueError as exc:  # a malformed tenant or run name
        print(f"mimoq: invalid_request_error: {exc}", file=sys.stderr)
        return EXIT_MALFORMED
    return print_answers(answers)


def _cancel(args: argparse.Namespace, settings: Settings) -> int:
    ids: list[str] = list(args.ids)
    if ids == ["-"]:
        ids = [line.strip() for line in sys.stdin if line.strip()]
    if args.tenant is not None:
        if ids:
            print("mimoq: give job ids or --tenant, not both", file=sys.stderr)
            return EXIT_MALFORMED
        tenant, model = args.tenant, args.model
        return run_cancel(
            settings, lambda r: cancel_tenant(r, tenant, model=model, settings=settings)
        )
    if args.model is not None or not ids:
        print("mimoq: give job ids (or --tenant T [--model M])", file=sys.stderr)
        return EXIT_MALFORMED
    return run_cancel(settings, lambda r: cancel_jobs(r, ids, settings=settings))
