"""Recent failures: a capped list in Redis, newest first, for ``mimoq inspect``.

Result records expire and are not indexed; finding the latest failures among them would
mean reading every record (transcripts included). Instead each final failure pushes a
small summary onto ``wire.RECENT_FAILURES_KEY``, trimmed to ``RECENT_FAILURES_MAX`` in the
same MULTI, so reading them is one LRANGE whatever the size of the fleet. The list also
gets a TTL, refreshed by every push: it goes once no job has failed for as long as result
records are kept (``MIMOQ_RESULT_TTL_S``), the life of the records it summarizes. The cap,
not an age, bounds it while failures keep coming: trimming a list by age would cost a scan
of its tail per push, and 1,000 short summaries are a few hundred kilobytes at most.
"""

from __future__ import annotations

import json
from typing import Any, Final

from redis.asyncio import Redis

from mimoq.core import wire
from mimoq.core.jobs import JobResult

RECENT_FAILURES_MAX: Final = 1000
#: Error messages are kept short: the full one stays in the result record.
MESSAGE_CHARS: Final = 300


def summary(result: JobResult) -> dict[str, Any]:
    """What is kept of a failed job: no metadata, no callback URL, a shortened message."""
    error = result.error or {}
    message = error.get("message")
    return {
        "id": result.id,
        "kind": result.kind,
        "model": result.model,
        "error_type": error.get("type"),
        "status": error.get("status"),
        "message": message[:MESSAGE_CHARS] if isinstance(message, str) else None,
        "tries": result.tries,
        "finished_at": result.finished_at,
    }


async def push(redis: Redis, result: JobResult, *, ttl_s: int) -> None:
    """Push a failed job's summary (no-op for any other status); the list lives ``ttl_s``
    seconds after its newest entry."""
    if result.status != "failed":
        return
    async with redis.pipeline(transaction=True) as pipe:
        pipe.lpush(wire.RECENT_FAILURES_KEY, wire.dumps(summary(result)))
        pipe.ltrim(wire.RECENT_FAILURES_KEY, 0, RECENT_FAILURES_MAX - 1)
        pipe.expire(wire.RECENT_FAILURES_KEY, ttl_s)
        await pipe.execute()


async def recent(redis: Redis, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` summaries; entries that are not JSON objects are skipped."""
    if limit <= 0:
        return []
    out: list[dict[str, Any]] = []
    for raw in await redis.lrange(wire.RECENT_FAILURES_KEY, 0, limit - 1):  # type: ignore[misc]
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out
