"""Usage per tenant and model in fixed windows (hour, day, and each limit's window) in Redis.

One finished job adds its usage on the same pipeline as its result write, with no round
trip of its own: one entry pushed on the usage journal (core/usage_journal.py), folded into
the windows in batches by the workers; or, for a tenant with limits, whose gate reads the
windows before each call, one script call (``scripts/usage_add.lua``) that adds it at once,
one ``HINCRBYFLOAT`` per metric the job has and window. Reading sums the windows of a span
(``mimoq usage --since 24h``: the hour windows that overlap it) and what the journal still
holds for them, and a tenant's total over its models (the ``*`` rows, what limits read) is
summed when read, not written per job.

What counts (docs/usage.md): ``requests`` are MiMo calls that answered
with a result (each chunk of a long job is one; the long job's own record adds none);
a call MiMo refused (4xx, 429, 5xx) reports no usage and is not billed, so it is not a
request here, and a job that ended failed counts once in ``failed``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from mimoq.core import dialect_constants as dc
from mimoq.core import scripts, usage_journal, wire
from mimoq.core.tenant_limits import (
    DAY_S,
    HOUR_S,
    MAX_SINCE_S,
    NO_TENANT,
    USAGE_METRICS,
    TenantLimits,
    starts_between,
    window_frees_at,
    window_start,
    window_text,
)

#: ``--since`` spans up to this long are summed from hour windows, longer ones from days.
HOURLY_UP_TO_S: Final = 7 * DAY_S
#: The row of a tenant's total over its models (UsageTable), summed when read.
ALL_MODELS_ROW: Final = "*"
#: Metrics that are sums of others: summed when read, never written (one HINCRBYFLOAT less
#: per window for every job with audio).
DERIVED: Final = {"audio_s": ("audio_in_s", "audio_out_s")}
#: metric written -> the derived metrics it adds to
_ADDS_TO: Final = {part: name for name, parts in DERIVED.items() for part in parts}


@dataclass(frozen=True)
class UsageEntry:
    """What one finished job adds: amounts by metric (zeros are left out)."""

    tenant: str | None
    model: str
    amounts: Mapping[str, float] = field(default_factory=dict)


def _added(entry: UsageEntry) -> dict[str, float]:
    """The amounts ``entry`` adds: metrics above zero that are stored, not derived."""
    return {
        m: float(v)
        for m, v in entry.amounts.items()
        if v > 0 and m in USAGE_METRICS and m not in DERIVED
    }


def _prefix(entry: UsageEntry) -> str:
    return f"{entry.tenant or NO_TENANT}|{entry.model}|"


def _call(entry: UsageEntry, windows: Iterable[int], now: float) -> tuple[list[str], list[str]]:
    """KEYS and ARGV of the script call that adds ``entry`` to each window holding ``now``
    (no KEYS: nothing to add)."""
    add = _added(entry)
    if not add:
        return [], []
    windows = sorted(set(windows))
    arg = {
        "prefix": _prefix(entry),
        "ttl": [usage_journal.window_ttl_s(w) for w in windows],
        "add": add,
    }
    return [wire.usage_key(w, window_start(now, w)) for w in windows], [wire.dumps(arg)]


def queue_record(pipe: Pipeline, entry: UsageEntry, windows: Iterable[int], now: float) -> bool:
    """Queue on ``pipe`` the script call that adds ``entry`` to each window holding ``now``
    (EVALSHA: the caller reloads it on NOSCRIPT with ``record_again``). False: nothing to add."""
    keys, args = _call(entry, windows, now)
    if keys:
        scripts.named("usage_add").queue(pipe, keys, args)
    return bool(keys)


async def record(redis: Redis, entry: UsageEntry, windows: Iterable[int], now: float) -> None:
    """Add ``entry`` now, on its own (for callers with no result write to ride along)."""
    async with redis.pipeline(transaction=False) as pipe:
        if not queue_record(pipe, entry, windows, now):
            return
        replies = await pipe.execute(raise_on_error=False)
    await record_again(redis, replies[-1], entry, windows, now)


async def record_again(
    redis: Redis, reply: Any, entry: UsageEntry, windows: Iterable[int], now: float
) -> None:
    """After a pipelined ``queue_record``: if the script was not loaded (Redis restarted or
    was flushed), load it and add the entry; any other error is raised."""
    keys, args = _call(entry, windows, now)
    await scripts.named("usage_add").settle(redis, reply, keys, args)


@dataclass(frozen=True)
class UsageWrite:
    """One job's usage, to ride on the pipeline of its result write (core/results.py).
    ``journal``: pushed on the usage journal (a tenant without limits), else added to its
    windows at once."""

    entry: UsageEntry
    windows: tuple[int, ...]
    now: float
    journal: bool = False

    def queue(self, pipe: Pipeline) -> bool:
        if not self.journal:
            return queue_record(pipe, self.entry, self.windows, self.now)
        add = _added(self.entry)
        if add:
            text = usage_journal.entry_text(_prefix(self.entry), self.windows, self.now, add)
            usage_journal.queue_push(pipe, text)
        return bool(add)

    async def settle(self, redis: Redis, reply: Any) -> None:
        """After the pipeline: a script not loaded is loaded and run; the push that made the
        journal a batch long folds it."""
        if not self.journal:
            await record_again(redis, reply, self.entry, self.windows, self.now)
            return
        if isinstance(reply, Exception):
            raise reply
        if usage_journal.due(reply):
            # the result is written: a fold that fails is left to the next beat's
            await usage_journal.fold_quietly(redis)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class UsageTable:
    """Totals by (tenant, model) over a span; ``model`` ``*`` is the tenant's sum over its
    models, added up here as the rows are read."""

    since: float
    until: float
    rows: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)

    def add(self, field_name: str, value: float) -> None:
        tenant, _, rest = field_name.partition("|")
        model, _, metric = rest.rpartition("|")
        # a stored "*" or derived field is one older workers wrote per job: summed here instead
        if metric not in USAGE_METRICS or metric in DERIVED or not model or model == ALL_MODELS_ROW:
            return
        for name in (model, ALL_MODELS_ROW):
            row = self.rows.setdefault((tenant, name), dict.fromkeys(USAGE_METRICS, 0.0))
            row[metric] = row[metric] + value
            if metric in _ADDS_TO:
                row[_ADDS_TO[metric]] += value

    def to_list(self, *, totals: bool = False) -> list[dict[str, Any]]:
        """Rows sorted by tenant and model; ``totals`` keeps the per-tenant ``*`` rows."""
        out = []
        for (tenant, model), row in sorted(self.rows.items()):
            if model == ALL_MODELS_ROW and not totals:
                continue
            amounts = {m: round(v, 3) if m.endswith("_s") else round(v) for m, v in row.items()}
            out.append({"tenant": tenant, "model": model, **amounts})
        return out


async def read_span(
    redis: Redis, *, since_s: float, now: float, tenant: str | None = None
) -> UsageTable:
    """Usage over the last ``since_s`` seconds, summed from the windows that overlap it (so
    up to one window more than asked: the first window is counted whole) and from what the
    usage journal holds for them, optionally of one tenant. O(windows) commands and one
    read of the journal (a fold's worth of entries at most, about), in one transaction: a
    fold moves entries from the journal to the windows atomically, so each is read once."""
    since_s = min(since_s, MAX_SINCE_S)  # nothing is kept longer: bounded work
    window = HOUR_S if since_s <= HOURLY_UP_TO_S else DAY_S
    starts = starts_between(now - since_s, now, window)
    table = UsageTable(since=float(starts[0]), until=now)
    async with redis.pipeline(transaction=True) as pipe:
        for start in starts:
            pipe.hgetall(wire.usage_key(window, start))
        pipe.lrange(wire.USAGE_JOURNAL_KEY, 0, -1)
        *hashes, journal = await pipe.execute()
    prefix = f"{tenant or NO_TENANT}|" if tenant is not None else ""
    found = (
        (_text(raw_field), float(_text(raw_value)))
        for reply in hashes
        for raw_field, raw_value in reply.items()
    )
    for name, value in (*found, *usage_journal.pending(journal, window, starts)):
        if name.startswith(prefix):
            table.add(name, value)
    return table


async def read_window_totals(
    redis: Redis, tenants: Iterable[str | None], limits: TenantLimits, now: float
) -> dict[str, dict[tuple[str, int], float]]:
    """Each tenant's totals in the current window of each of its limits:
    tenant -> (metric, window_s) -> amount, each the sum of the tenant's models (and of a
    derived metric's parts): one HMGET per limit. One round trip."""
    asks: list[tuple[str, str, int]] = []
    async with redis.pipeline(transaction=False) as pipe:
        for tenant in tenants:
            name = tenant or NO_TENANT
            for limit in limits.for_tenant(tenant):
                key = wire.usage_key(limit.window_s, window_start(now, limit.window_s))
                parts = DERIVED.get(limit.metric, (limit.metric,))
                pipe.hmget(key, [f"{name}|{m}|{p}" for m in dc.ALL_MODELS for p in parts])
                asks.append((name, limit.metric, limit.window_s))
        replies = await pipe.execute() if asks else []
    out: dict[str, dict[tuple[str, int], float]] = {}
    for (name, metric, window_s), reply in zip(asks, replies, strict=True):
        used = sum(float(_text(value)) for value in reply if value is not None)
        out.setdefault(name, {})[(metric, window_s)] = used
    return out


async def holds(redis: Redis, tenants: Iterable[str | None]) -> dict[str, dict[str, Any]]:
    """The hold marks (``wire.tenant_held_key``) of those ``tenants`` held now: tenant ->
    {metric, limit, window_s, used, frees_at, reason}. One round trip."""
    names = list(dict.fromkeys(t or NO_TENANT for t in tenants))
    if not names:
        return {}
    marks = await redis.mget([wire.tenant_held_key(n) for n in names])
    out: dict[str, dict[str, Any]] = {}
    for name, mark in zip(names, marks, strict=True):
        if mark is not None:
            try:
                out[name] = json.loads(mark)
            except ValueError:
                continue
    return out


async def held_reason(redis: Redis, job_id: str) -> str | None:
    """Why a job that waits is not sent, when its tenant is held at its limit; else None."""
    raw = await redis.get(wire.job_key(job_id))
    if raw is None:
        return None
    job = wire.deserialize(raw).get("k", {}).get("job")
    tenant = job.get("tenant") if isinstance(job, dict) else None
    found = await holds(redis, [tenant if isinstance(tenant, str) else None])
    mark = next(iter(found.values()), None)
    return str(mark.get("reason")) if isinstance(mark, dict) and mark.get("reason") else None


def _limit_rows(
    tenants: Iterable[str],
    limits: TenantLimits,
    totals: Mapping[str, Mapping[tuple[str, int], float]],
    marks: Mapping[str, Mapping[str, Any]],
    now: float,
) -> list[dict[str, Any]]:
    rows = []
    for name in tenants:
        for limit in limits.for_tenant(None if name == NO_TENANT else name):
            used = totals.get(name, {}).get((limit.metric, limit.window_s), 0.0)
            rows.append({
                "tenant": name, "metric": limit.metric, "limit": limit.amount,
                "window": window_text(limit.window_s), "window_s": limit.window_s,
                "used": round(used, 3), "frees_at": window_frees_at(now, limit.window_s),
                "held": name in marks and used >= limit.amount,
            })  # fmt: skip
    return rows


async def usage_report(
    redis: Redis,
    limits: TenantLimits,
    *,
    since_s: float,
    now: float,
    tenant: str | None = None,
    only_tenant: bool = False,
) -> dict[str, Any]:
    """What ``mimoq usage``, GET /v1/usage and the dashboard show: totals by tenant and
    model over the span, and each tenant's use of its limits in their current windows
    (``held``: the tenant is held at that limit until ``frees_at``). ``only_tenant``: just
    ``tenant`` (None: the jobs that name none)."""
    table = await read_span(
        redis, since_s=since_s, now=now, tenant=(tenant or NO_TENANT) if only_tenant else None
    )
    if only_tenant:
        names = [tenant or NO_TENANT]
    else:
        names = sorted({t for t, _ in table.rows} | set(limits.by_tenant))
    totals = await read_window_totals(redis, names, limits, now)
    marks = await holds(redis, names)
    return {
        "since_s": since_s,
        "from": table.since,
        "until": now,
        "usage": table.to_list(),
        "limits": _limit_rows(names, limits, totals, marks, now),
        "held": {name: mark.get("frees_at") for name, mark in marks.items()},
    }
