"""What ``mimoq inspect`` reads from Redis (SCAN-family commands only, never KEYS)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from typing import Any, Final

from redis.asyncio import Redis

from mimoq.core import deadletters, failures, wire
from mimoq.core.settings import Settings
from mimoq.core.tenant_limits import DAY_S
from mimoq.core.usage_windows import usage_report
from mimoq.worker.accounts.breaker import read_paused
from mimoq.worker.depth import job_kind_and_lane, read_depth
from mimoq.worker.heartbeat import read_beats
from mimoq.worker.limiter import RedisLimiter
from mimoq.worker.limiter.admission import waiting_depth, waiting_models
from mimoq.worker.limiter.config import LimiterConfig
from mimoq.worker.scaling import read_desired_workers

_PAGE: Final = 500


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _kinds(redis: Redis, ids: list[str]) -> list[str]:
    """Each job's kind (speech, transcription, callback, invalid, expired or other)."""
    out: list[str] = []
    for start in range(0, len(ids), _PAGE):
        page = ids[start : start + _PAGE]
        out.extend(
            job_kind_and_lane(raw)[0] for raw in await redis.mget([wire.job_key(i) for i in page])
        )
    return out


async def queue_depth(redis: Redis, now_ms: int) -> dict[str, Any]:
    """Every unfinished job (mimoq.worker.depth): ``total``, ``by_state``, ``depth`` rows by
    state, lane and kind, and (as before) ``due`` and ``deferred`` by kind."""
    depth = await read_depth(redis, now_ms)
    return {
        "due": depth.kinds_in("queued"),
        "deferred": depth.kinds_in("deferred"),
        **depth.to_dict(),
    }


async def _tries(redis: Redis, ids: list[str]) -> tuple[list[int], list[int]]:
    """arq's try counter and our limiter-deferral counter of each job (0 when absent)."""
    if not ids:
        return [], []
    retries = await redis.mget([wire.ARQ_RETRY_PREFIX + i for i in ids])
    deferrals = await redis.mget([wire.DEFERRALS_PREFIX + i for i in ids])
    return [int(r or 0) for r in retries], [int(d or 0) for d in deferrals]


async def next_deferred(redis: Redis, now_ms: int, limit: int) -> list[dict[str, Any]]:
    """The ``limit`` deferred jobs due soonest: kind, when, tries started, limiter deferrals."""
    members = await redis.zrangebyscore(
        wire.QUEUE_NAME, f"({now_ms}", "+inf", start=0, num=limit, withscores=True
    )
    ids = [_text(m) for m, _ in members]
    kinds = await _kinds(redis, ids)
    tries, deferrals = await _tries(redis, ids)
    return [
        {
            "id": job_id,
            "kind": kind,
            "run_at": score / 1000,
            "in_s": round((score - now_ms) / 1000, 3),
            "tries_started": t,
            "limiter_deferrals": d,
        }
        for (job_id, kind, (_, score), t, d) in zip(
            ids, kinds, members, tries, deferrals, strict=True
        )
    ]


async def in_flight(redis: Redis, limit: int) -> dict[str, Any]:
    """Jobs a worker holds right now (arq's in-progress keys, found with SCAN)."""
    pattern = wire.ARQ_IN_PROGRESS_PREFIX + "*"
    prefix_len = len(wire.ARQ_IN_PROGRESS_PREFIX)
    ids = sorted({_text(k)[prefix_len:] async for k in redis.scan_iter(match=pattern, count=_PAGE)})
    kinds = await _kinds(redis, ids)
    shown = ids[:limit]
    tries, _ = await _tries(redis, shown)
    return {
        "count": len(ids),
        "by_kind": dict(sorted(Counter(k for k in kinds).items())),
        "jobs": [
            {"id": job_id, "kind": kind, "try": t}
            for job_id, kind, t in zip(shown, kinds[:limit], tries, strict=True)
        ],
    }


async def dead_letter_state(redis: Redis, limit: int, *, ttl_s: int) -> dict[str, Any]:
    """How many callback deliveries gave up (within retention, ``ttl_s``), and the newest
    few (redacted summaries)."""
    newest: list[dict[str, object]] = []
    if limit > 0:
        async for letter in deadletters.iterate(redis):
            newest.append(letter.summary())
            if len(newest) >= limit:
                break
    count = await deadletters.count(redis, ttl_s=ttl_s)
    return {"count": count, "newest": newest, "retention_s": ttl_s}


async def limiter_state(redis: Redis, settings: Settings) -> dict[str, Any]:
    """Each model's limiter snapshot, as ``mimoq limits`` shows it."""
    if not settings.limiter.enabled:
        return {"enabled": False}
    config = LimiterConfig.from_settings(settings)
    limiter = RedisLimiter(config, redis)
    snapshots = [(await limiter.snapshot(model)).to_dict() for model in config.models()]
    return {"enabled": True, "account": config.account, "limiters": snapshots}


async def worker_state(redis: Redis, now: float) -> dict[str, Any]:
    beats = await read_beats(redis)
    records = [b.model_dump() | {"age_s": round(b.age_s(now), 3), "live": b.live(now)}
               for b in beats]  # fmt: skip
    return {"live": sum(1 for r in records if r["live"]), "records": records}


async def inspect(
    redis: Redis, settings: Settings, *, limit: int, with_usage: bool = False
) -> dict[str, Any]:
    """The whole picture, as one JSON-ready dict; ``with_usage`` adds the day's usage report
    (``usage``, the dashboard's panel), read once for it and the held tenants alike."""
    now = time.time()
    now_ms = int(now * 1000)
    limits = settings.usage.limits()
    usage = (
        await usage_report(redis, limits, since_s=DAY_S, now=now)
        if with_usage or limits.enabled
        else None
    )
    extra = {"usage": usage} if with_usage else {}
    return {
        "at": now,
        "queue": await queue_depth(redis, now_ms),
        "deferred": await next_deferred(redis, now_ms, limit),
        "in_flight": await in_flight(redis, limit),
        "failures": {
            "kept": int(await redis.llen(wire.RECENT_FAILURES_KEY)),  # type: ignore[misc]
            "recent": await failures.recent(redis, limit),
        },
        "dead_letters": await dead_letter_state(
            redis, limit, ttl_s=settings.callbacks.dead_letter_ttl_s
        ),
        "workers": await worker_state(redis, now),
        "limiters": await limiter_state(redis, settings),
        "waiting": await waiting_state(redis),
        "waiting_interactive": await waiting_state(redis, "interactive"),
        "accounts_paused": [p.to_dict() for p in await read_paused(redis)],
        "desired_workers": (await read_desired_workers(redis, settings)).to_dict(),
        "tenants_held": tenants_held(usage),
        **extra,
    }


def tenants_held(usage: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The limit rows of tenants held at a MIMOQ_TENANT_LIMITS limit now, from a usage report
    (None: no limits, nobody held)."""
    return [r for r in usage["limits"] if r["held"]] if usage is not None else []


async def waiting_state(redis: Redis, lane: str = "bulk") -> dict[str, dict[str, int]]:
    """Jobs of ``lane`` waiting for admission (not yet in the queue), per model and tenant
    (interactive jobs wait only behind a flood of them)."""
    depths = {m: await waiting_depth(redis, m, lane) for m in await waiting_models(redis)}
    return {m: d for m, d in depths.items() if d or lane == "bulk"}


# --- the readable table for a terminal ---------------------------------------------------


def _table(headers: list[str], rows: Iterable[Iterable[object]]) -> list[str]:
    cells = [headers, *([("" if v is None else str(v)) for v in row] for row in rows)]
    if len(cells) == 1:
        return ["  (none)"]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return ["  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
            for row in cells]  # fmt: skip


def render(report: dict[str, Any]) -> str:
    """``inspect``'s report as aligned plain-text tables."""
    queue = report["queue"]
    lines = [f"queue ({queue['total']} jobs not finished)"]
    lines += _table(
        ["state", "lane", "kind", "jobs"],
        ([r["state"], r["lane"], r["kind"], r["count"]] for r in queue["depth"]),
    )
    lines += ["", "next deferred"]
    lines += _table(
        ["id", "kind", "in_s", "tries", "deferrals"],
        ([d["id"], d["kind"], d["in_s"], d["tries_started"], d["limiter_deferrals"]]
         for d in report["deferred"]),
    )  # fmt: skip
    flight = report["in_flight"]
    lines += ["", f"in flight ({flight['count']})"]
    lines += _table(["id", "kind", "try"], ([j["id"], j["kind"], j["try"]] for j in flight["jobs"]))
    fails = report["failures"]
    lines += ["", f"recent failures ({fails['kept']} kept)"]
    lines += _table(
        ["id", "kind", "error", "status", "message"],
        ([f.get("id"), f.get("kind"), f.get("error_type"), f.get("status"),
          (f.get("message") or "")[:60]] for f in fails["recent"]),
    )  # fmt: skip
    dead = report["dead_letters"]
    lines += ["", f"dead letters ({dead['count']}), each kept {dead['retention_s']} s"]
    lines += _table(
        ["delivery", "reason", "attempts", "target"],
        ([d["delivery_id"], d["reason"], d["attempts"], d["target"]] for d in dead["newest"]),
    )
    workers = report["workers"]
    desired = report.get("desired_workers") or {}
    lines += ["", f"workers ({workers['live']} live, {desired.get('workers', '?')} desired)"]
    lines += _table(
        ["worker", "age_s", "in_flight", "draining", "done", "failed"],
        ([w["worker_id"], w["age_s"], w["in_flight"], w["draining"], w["jobs_complete"],
          w["jobs_failed"]] for w in workers["records"]),
    )  # fmt: skip
    lines += _limiter_lines(report["limiters"])
    lines += _admission_lines(report)
    paused = report.get("accounts_paused", [])
    lines += ["", f"accounts paused ({len(paused)})"]
    lines += _table(
        ["account", "since", "paused_s", "status", "probes", "reason"],
        ([p["account"], time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(p["since"])),
          p["paused_s"], p["status"], p["probes"], p["reason"][:60]] for p in paused),
    )  # fmt: skip
    return "\n".join(lines)


def _limiter_lines(limiters: dict[str, Any]) -> list[str]:
    lines = ["", "limiters" + ("" if limiters["enabled"] else " (disabled)")]
    if limiters["enabled"]:
        lines += _table(
            ["model", "per_window", "recent", "in_flight", "tickets", "cooldown_s"],
            ([s["model"], round(s["requests_effective"], 1), s["requests_recent"], s["in_flight"],
              s["tickets"], round(s["cooldown_remaining_s"], 1)] for s in limiters["limiters"]),
        )  # fmt: skip
        lines += ["", "lanes (tickets held, grants in the last window and in all)"]
        lines += _table(
            ["model", "tickets i/b", "recent i/b", "grants i/b", "admitted", "tenant grants",
             "tenant tickets"],
            (_lane_row(s) for s in limiters["limiters"] if any(s["lanes"]["grants"].values())
             or s["tickets"]),
        )  # fmt: skip
    return lines


def _admission_lines(report: dict[str, Any]) -> list[str]:
    """Who waits for admission: bulk and flooded interactive jobs, and held tenants."""
    waiting = report["waiting"]
    lines = ["", f"bulk waiting for admission ({sum(sum(t.values()) for t in waiting.values())})"]
    lines += _table(
        ["model", "tenant", "waiting"],
        ([m, t, n] for m, tenants in waiting.items() for t, n in tenants.items()),
    )
    flooded = report.get("waiting_interactive") or {}
    if flooded:
        count = sum(sum(t.values()) for t in flooded.values())
        lines += ["", f"interactive waiting for admission ({count})"]
        lines += _table(
            ["model", "tenant", "waiting"],
            ([m, t, n] for m, tenants in flooded.items() for t, n in tenants.items()),
        )
    held = report.get("tenants_held") or []
    if held:
        lines += ["", f"tenants held at their limit ({len(held)}): their jobs wait"]
        lines += _table(
            ["tenant", "limit", "used", "frees_at"],
            ([h["tenant"], f"{h['metric']}={h['limit']:g}/{h['window']}", h["used"],
              time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(h["frees_at"]))] for h in held),
        )  # fmt: skip
    return lines


def _lane_row(snapshot: dict[str, Any]) -> list[object]:
    lanes = snapshot["lanes"]

    def pair(d: dict[str, int]) -> str:
        return f"{d.get('interactive', 0)}/{d.get('bulk', 0)}"

    tenants = ", ".join(f"{t}:{n}" for t, n in sorted(lanes["tenant_grants"].items()))
    # tickets held now per lane and tenant ("i big:3, small:1; b _:5"): whose turn is next
    held = "; ".join(
        f"{lane[0]} " + ", ".join(f"{t}:{n}" for t, n in sorted(counts.items()))
        for lane, counts in sorted(lanes.get("tenant_tickets", {}).items(), reverse=True)
    )
    return [snapshot["model"], pair(lanes["tickets"]), pair(lanes["recent"]),
            pair(lanes["grants"]), lanes["admitted"], tenants, held]  # fmt: skip
