"""The usage journal (``wire.USAGE_JOURNAL_KEY``): finished jobs' usage on its way to the
window hashes (core/usage_windows.py, docs/usage.md).

Adding a job's usage to its windows at once costs a script call of one ``HINCRBYFLOAT`` per
metric and window: 8.6 commands a job in ``bench/redis_cost.py``'s mix, and a script's
Redis CPU. A job of a tenant without limits instead pushes one JSON entry here, on its result
write (one ``RPUSH``), and workers fold the journal in batches: the batch is read, summed
here, and added by one script call (``scripts/usage_fold.lua``) of one ``HINCRBYFLOAT`` per
field the batch touches, however many jobs it holds. A fold is exact: the script checks that
the batch is still the journal's head (its first and last entries, each with a nonce) before
it adds it and trims it, in one step, so two workers folding at once add it once, and a
worker that stops between its read and its call leaves it for the next. Readers of a span
add what is still in the journal (``pending``), read with the hashes in one transaction.

Folded: every ``FOLD_EVERY`` entries by the worker whose push reached that length, and at
every worker's beat (``fold``).
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from mimoq.core import scripts, wire
from mimoq.core.tenant_limits import DAY_S, HOUR_S, USAGE_METRICS, window_start

log = structlog.get_logger("mimoq.usage")

#: The worker whose push makes the journal this long (or a multiple) folds it.
FOLD_EVERY: Final = 500
#: Entries one fold call takes (its KEYS: the few windows they fall in).
FOLD_BATCH: Final = 1000
#: Batches one ``fold`` takes at most (a beat's work stays bounded; the next beat goes on).
MAX_BATCHES: Final = 20
#: The longest window an entry may name (a limit's window is at most 31 days).
MAX_WINDOW_S: Final = 31 * DAY_S
#: How long a window's hash outlives its window: hour windows serve ``--since`` up to a
#: week, day windows up to 400 days; any other (a limit's) only its own window and the next.
_KEEP_S: Final = {HOUR_S: 8 * DAY_S, DAY_S: 400 * DAY_S}


def window_ttl_s(window_s: int) -> int:
    """The TTL a window's hash gets when a field of it is created."""
    return _KEEP_S.get(window_s, 2 * window_s) + window_s


def entry_text(prefix: str, windows: Sequence[int], now: float, add: Mapping[str, float]) -> str:
    """One job's journal entry: ``add`` (metric -> amount above zero) for the fields
    ``prefix + metric`` of each window of ``windows`` holding ``now``."""
    entry = {"p": prefix, "w": sorted(set(windows)), "t": now, "a": dict(add)}
    return wire.dumps({**entry, "n": secrets.token_hex(6)})


def queue_push(pipe: Pipeline, text: str) -> None:
    """Queue the push of one entry on ``pipe`` (its reply: the journal's length)."""
    pipe.rpush(wire.USAGE_JOURNAL_KEY, text)


def due(length: Any) -> bool:
    """Whether the push that made the journal ``length`` long falls to fold it."""
    return isinstance(length, int) and length > 0 and length % FOLD_EVERY == 0


@dataclass(frozen=True)
class JournalEntry:
    """One entry, checked: what it adds, where and when."""

    prefix: str
    windows: tuple[int, ...]
    at: float
    amounts: tuple[tuple[str, float], ...]

    def fields(self) -> Iterator[tuple[str, float]]:
        for metric, amount in self.amounts:
            yield self.prefix + metric, amount


def parse_entry(raw: bytes | str) -> JournalEntry | None:
    """The entry in ``raw``, or None for one that is not a valid entry (written by hand or
    by a foreign program: it is dropped by the fold, never added)."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    prefix, windows, at, add = data.get("p"), data.get("w"), data.get("t"), data.get("a")
    if not isinstance(prefix, str) or prefix.count("|") != 2 or not prefix.endswith("|"):
        return None
    if (
        not isinstance(windows, list)
        or not windows
        or not all(type(w) is int and 0 < w <= MAX_WINDOW_S for w in windows)
    ):
        return None
    if not isinstance(at, int | float) or isinstance(at, bool) or not math.isfinite(at):
        return None
    if at <= 0:
        return None
    if not isinstance(add, dict):
        return None
    amounts = []
    for metric, amount in add.items():
        if metric not in USAGE_METRICS or type(amount) not in (int, float):
            return None
        if not math.isfinite(amount) or amount <= 0:
            return None
        amounts.append((metric, float(amount)))
    return JournalEntry(prefix, tuple(sorted(set(windows))), float(at), tuple(amounts))


def pending(
    items: Iterable[bytes | str], window_s: int, starts: Iterable[int]
) -> Iterator[tuple[str, float]]:
    """The fields and amounts the journal's ``items`` will add to the ``window_s`` windows
    starting at ``starts``: what a reader of those windows adds to what it read."""
    wanted = set(starts)
    for raw in items:
        entry = parse_entry(raw)
        if entry is None or window_s not in entry.windows:
            continue
        if window_start(entry.at, window_s) in wanted:
            yield from entry.fields()


async def fold_batch(redis: Redis, *, batch: int = FOLD_BATCH) -> tuple[int, int]:
    """Fold the journal's first ``batch`` entries into their windows: (entries folded,
    entries read). (0, n > 0): another worker folded them first."""
    items: list[bytes] = await redis.lrange(wire.USAGE_JOURNAL_KEY, 0, batch - 1)  # type: ignore[misc]
    if not items:
        return 0, 0
    sums: dict[tuple[str, str], float] = {}
    ttls: dict[str, int] = {}
    dropped = 0
    for raw in items:
        entry = parse_entry(raw)
        if entry is None:
            dropped += 1
            continue
        for window_s in entry.windows:
            key = wire.usage_key(window_s, window_start(entry.at, window_s))
            ttls[key] = window_ttl_s(window_s)
            for name, amount in entry.fields():
                sums[key, name] = sums.get((key, name), 0.0) + amount
    keys = sorted(ttls)
    index = {key: i + 2 for i, key in enumerate(keys)}  # KEYS[1] is the journal
    adds = [[index[key], name, amount] for (key, name), amount in sums.items()]
    folded = await scripts.named("usage_fold").run(
        redis,
        [wire.USAGE_JOURNAL_KEY, *keys],
        [len(items), items[0], items[-1], wire.dumps(adds), wire.dumps([ttls[k] for k in keys])],
    )
    if folded and dropped:
        log.warning("usage.journal_entries_dropped", count=dropped, why="not a valid entry")
    return int(folded or 0), len(items)


async def fold(redis: Redis, *, max_batches: int = MAX_BATCHES) -> int:
    """Fold the journal, a batch at a time, until it holds less than a batch, another
    worker is folding it, or ``max_batches`` are done. Returns the entries folded."""
    total = 0
    for _ in range(max_batches):
        folded, read = await fold_batch(redis)
        total += folded
        if folded == 0 or read < FOLD_BATCH:
            break
    return total


async def fold_quietly(redis: Redis) -> int:
    """``fold``, its Redis errors logged, not raised: the journal keeps what is not folded,
    and the next fold takes it. The entries folded."""
    try:
        return await fold(redis)
    except RedisError as exc:
        log.warning("usage.fold_failed", error=type(exc).__name__)
        return 0
