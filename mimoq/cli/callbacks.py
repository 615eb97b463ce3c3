"""``mimoq callbacks``: list, show and replay dead-lettered callback deliveries."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis

from mimoq.core import deadletters, deliveries, wire
from mimoq.core.connections import connect
from mimoq.core.deadletters import DeadLetter, DeadLetterReason
from mimoq.core.finish import callback_body
from mimoq.core.jobs import JobResult
from mimoq.core.results import read_result
from mimoq.core.settings import Settings
from mimoq.core.ssrf import redact_url
from mimoq.core.webhooks import AttemptRecord, Delivery
from mimoq.worker.callback_delivery import ReplayOutcome, replay_dead_letter

_REDACTED = "<redacted>"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``callbacks list|show|replay`` to the ``mimoq`` command."""
    parser = sub.add_parser(
        "callbacks", help="inspect and replay callback deliveries that gave up (dead letters)"
    )
    actions = parser.add_subparsers(dest="callbacks_action", required=True, metavar="ACTION")

    listing = actions.add_parser(
        "list",
        help="dead letters, newest first, with when each expires (MIMOQ_DEAD_LETTER_TTL_S)",
        description="One JSON line per dead letter when stdout is not a terminal (or with "
        "--json), a readable table when it is. Each is kept MIMOQ_DEAD_LETTER_TTL_S seconds "
        "(30 days by default) after its delivery gave up: replay it before it expires.",
    )
    _filters(listing)
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    listing.add_argument("--json", action="store_true", help="JSON lines even on a terminal")
    listing.set_defaults(func=_sync(_list))

    show = actions.add_parser(
        "show",
        help="one delivery in full, with every attempt (dead or not; credentials redacted)",
    )
    show.add_argument("delivery_id", metavar="DELIVERY_ID")
    show.add_argument(
        "--reveal",
        action="store_true",
        help="also print the full URL and header values (they may hold credentials)",
    )
    show.set_defaults(func=_sync(_show))

    again = actions.add_parser(
        "replay", help="send again with the same webhook-id and a fresh schedule of attempts"
    )
    again.add_argument("delivery_id", metavar="DELIVERY_ID", nargs="?")
    again.add_argument("--all", action="store_true", help="every dead letter matching the filters")
    _filters(again)
    again.set_defaults(func=_sync(_replay))


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--job", metavar="ID", help="only deliveries of this job id")
    parser.add_argument(
        "--reason", choices=[r.value for r in DeadLetterReason], help="only this reason"
    )


_AsyncHandler = Callable[[argparse.Namespace, Redis, Settings], Awaitable[int]]


def _sync(handler: _AsyncHandler) -> Callable[[argparse.Namespace, Settings], int]:
    def run(args: argparse.Namespace, settings: Settings) -> int:
        async def main() -> int:
            redis = connect(settings)
            try:
                return await handler(args, redis, settings)
            finally:
                await redis.aclose()

        return asyncio.run(main())

    return run


def _emit(data: dict[str, Any]) -> None:
    print(wire.dumps(data), flush=True)


def _fail(message: str) -> int:
    print(f"mimoq callbacks: {message}", file=sys.stderr)
    return 1


def _reason(args: argparse.Namespace) -> DeadLetterReason | None:
    return DeadLetterReason(args.reason) if args.reason else None


async def _list(args: argparse.Namespace, redis: Redis, settings: Settings) -> int:
    if args.limit < 1:
        return _fail("--limit must be at least 1")
    letters: list[DeadLetter] = []
    async for letter in deadletters.iterate(redis, job_id=args.job, reason=_reason(args)):
        letters.append(letter)
        if len(letters) >= args.limit:
            break
    retention_s = settings.callbacks.dead_letter_ttl_s
    expiries = await deadletters.expiries(redis, [x.delivery_id for x in letters])
    rows = [
        letter.summary() | {"expires_at": expiries[letter.delivery_id], "retention_s": retention_s}
        for letter in letters
    ]
    if args.json or not sys.stdout.isatty():
        for row in rows:
            _emit(row)
    else:
        print(_render(rows, retention_s, now=time.time()), flush=True)
    return 0


def _render(rows: list[dict[str, Any]], retention_s: int, *, now: float) -> str:
    """The listing as a table, under a line saying how long dead letters are kept."""
    head = (
        f"{len(rows)} dead letter{'' if len(rows) == 1 else 's'}, newest first; each is kept "
        f"{_span(retention_s)} after its delivery gave up (MIMOQ_DEAD_LETTER_TTL_S): "
        "replay it before it expires"
    )
    cells = [["delivery", "job", "reason", "attempts", "last", "target", "died", "expires in"]]
    for row in rows:
        expires = row["expires_at"]
        cells.append([
            row["delivery_id"], row["job_id"], row["reason"], str(row["attempts"]),
            str(row["last_status"] or row["last_error"] or ""), row["target"],
            _span(now - row["dead_at"]) + " ago",
            _span(expires - now) if expires is not None else "no TTL (written before retention)",
        ])  # fmt: skip
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    table = ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
             for line in cells]  # fmt: skip
    return "\n".join([head, *table] if rows else [head])


def _span(seconds: float) -> str:
    """A duration as people say it: 45 s, 12 min, 5 h, 30 days."""
    s = max(0.0, seconds)
    for unit, size in (("days", 86_400), ("h", 3600), ("min", 60)):
        if s >= size * (2 if unit == "days" else 1):
            return f"{s / size:.0f} {unit}"
    return f"{s:.0f} s"


def _details(
    letter: DeadLetter | None, delivery: Delivery, result: JobResult | None, *, reveal: bool
) -> dict[str, Any]:
    out: dict[str, Any] = (
        letter.summary()
        if letter is not None
        else {
            "delivery_id": delivery.delivery_id,
            "job_id": delivery.job_id,
            "reason": None,  # not dead-lettered: pending or delivered
            "attempts": delivery.prior_attempts + len(delivery.history),
            "target": redact_url(delivery.url),
        }
    )
    out.update(
        dead_lettered=letter is not None,
        created_at=delivery.created_at,
        replays=delivery.replays,
        headers={k: v if reveal else _REDACTED for k, v in delivery.headers.items()},
        **_body(letter, delivery, result),
        history=[_attempt(a, reveal=reveal) for a in delivery.history],
    )
    if reveal:
        out["url"] = delivery.url
        if letter is not None and letter.last_location:
            out["location"] = letter.last_location
    return out


def _body(
    letter: DeadLetter | None, delivery: Delivery, result: JobResult | None
) -> dict[str, Any]:
    """What the delivery sends (or sent): an ended delivery's record has no body of its
    own; its dead letter has one, else it is rebuilt from the result record (the same
    bytes), while that lasts (``MIMOQ_RESULT_TTL_S``)."""
    if delivery.body is not None:
        return {"body": delivery.body}
    if letter is not None and letter.delivery.body is not None:
        return {"body": letter.delivery.body}
    if result is not None:
        return {"body": callback_body(result, delivery.delivery_id), "body_rebuilt": True}
    return {"body": None, "body_note": "the result record has expired: the body is gone"}


def _attempt(record: AttemptRecord, *, reveal: bool) -> dict[str, Any]:
    out = record.model_dump(mode="json", exclude_none=True)
    if record.location and not reveal:  # the receiver's URL may carry its own tokens
        out["location"] = redact_url(record.location)
    return out


async def _show(args: argparse.Namespace, redis: Redis, settings: Settings) -> int:
    # The dead letter (if any) and the delivery record: the record, newer, has the history
    # of a replay still under way; a dead letter outlives its record.
    letter = await deadletters.get(redis, args.delivery_id)
    record = await deliveries.load(redis, args.delivery_id)
    delivery = record or (letter.delivery if letter is not None else None)
    if delivery is None:
        return _fail(f"no delivery or dead letter {args.delivery_id!r}")
    try:
        result = await read_result(redis, delivery.job_id)
    except ValidationError:  # not a record this version can read: show what is stored
        result = None
    _emit(_details(letter, delivery, result, reveal=args.reveal))
    return 0


async def _replay(args: argparse.Namespace, redis: Redis, settings: Settings) -> int:
    if bool(args.delivery_id) == bool(args.all):
        return _fail("give either one DELIVERY_ID or --all (with optional --job/--reason)")
    if args.delivery_id:
        if args.job or args.reason:
            return _fail("--job and --reason filter --all; with a DELIVERY_ID leave them out")
        outcome = await replay_dead_letter(redis, args.delivery_id)
        if outcome is ReplayOutcome.not_found:
            return _fail(f"no dead letter {args.delivery_id!r}")
        _emit({"delivery_id": args.delivery_id, "outcome": outcome.value})
        return 0
    # Collect first, then replay: the listing pages through an index that may change.
    letters = [
        letter async for letter in deadletters.iterate(redis, job_id=args.job, reason=_reason(args))
    ]
    for letter in letters:
        outcome = await replay_dead_letter(redis, letter.delivery_id)
        target = redact_url(letter.delivery.url)
        _emit({"delivery_id": letter.delivery_id, "outcome": outcome.value, "target": target})
    return 0
