"""A run's progress in Redis: its counters by status, the index of its unfinished jobs, its end.

A *run* is a group of jobs followed together: a ``mimoq batch`` run, an HTTP batch, or any
jobs a producer tags with the same ``run`` field. Everything is O(1) per job:

- enqueue.lua counts a job into ``mimoq:run:<run>`` (``total``, ``model:<model>``) and adds
  its id to ``mimoq:run:<run>:pending``;
- the one finish path (``mimoq.core.finish``, for cancels too) counts a finished job with
  its result write, in the same round trip (:class:`RunCount`; the worker's write, in the
  same script): the id leaves the index and its status is counted, once;
- a producer that has enqueued all of a run's jobs *seals* it (:func:`seal`). A sealed run
  whose index is empty has ended; exactly one caller (a finish or the seal) is told so, by
  ``HSETNX ended_at`` inside the same script, and announces it (``batch.completed``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from mimoq.core import scripts, wire
from mimoq.core.scripts.replies import RunCounted, decode_finish_many, decode_run_finish

#: The statuses a run counts (a job's final status in its result record).
FINISHED_STATUSES: Final = ("succeeded", "failed", "cancelled")
#: How long a run's keys outlive their last change when nothing else sets it (8 days).
_KEEP_MS: Final = 8 * 86_400_000

# The run scripts (mimoq/core/scripts/run_*.lua): all but run_begin run after the prelude
# run_end_if_done.lua (end the run if it is sealed and nothing of it is left). Each takes
# the run's keys (_keys) as KEYS; their ARGV are in each file.


def _keys(run: str) -> list[str]:
    return [wire.run_key(run), wire.run_pending_key(run), wire.RUNS_ACTIVE_KEY]


@dataclass
class RunCount:
    """A finished job's count in its run, riding on its result write (core/results.py)
    instead of a round trip of its own; ``ended`` once settled: the job was the sealed
    run's last, and this caller alone announces the end."""

    run: str
    job_id: str
    at: str = field(default_factory=lambda: _now())
    ended: bool = False

    def keys(self) -> list[str]:
        return _keys(self.run)

    def args(self, status: str) -> list[str]:
        """``count_finish``'s arguments after the run's keys (run_end_if_done.lua)."""
        return [self.run, self.job_id, status, self.at]

    def queue(self, pipe: Pipeline, status: str) -> None:
        scripts.named("run_finish").queue(pipe, self.keys(), self.args(status))

    async def settle(self, redis: Redis, reply: Any, status: str) -> None:
        finish = scripts.named("run_finish")
        counted = await finish.settle(redis, reply, self.keys(), self.args(status))
        self.note(decode_run_finish(counted))

    def note(self, counted: RunCounted) -> None:
        """``count_finish``'s answer: did the run end with this job?"""
        self.ended = counted is RunCounted.ENDED


def _now() -> str:
    return f"{time.time():.3f}"


async def begin(
    redis: Redis,
    run: str,
    *,
    tenant: str | None,
    priority: str,
    callback: dict[str, Any] | None = None,
) -> None:
    """Start (or start again) a run whose jobs a producer is about to enqueue."""
    args = [
        run,
        _now(),
        tenant or wire.NO_TENANT,
        priority,
        json.dumps(callback) if callback else "",
    ]
    await scripts.named("run_begin").run(redis, _keys(run), [*args, _KEEP_MS])


async def count_refused(redis: Redis, run: str, n: int) -> None:
    """Items of the run refused before they became jobs (a bad line, an unreadable file):
    counted as failed, so the run's counts cover every item (as OpenAI's batches do)."""
    if n > 0:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(wire.run_key(run), "total", n)
            pipe.hincrby(wire.run_key(run), "failed", n)
            await pipe.execute()


async def seal(redis: Redis, run: str) -> bool:
    """Every job of the run is enqueued; True if that ended it (nothing was left to run)."""
    return bool(await scripts.named("run_seal").run(redis, _keys(run), [run, _now()]))


async def mark_cancelling(redis: Redis, run: str) -> bool:
    """A cancel of the whole run began: it is sealed (no more jobs), and its end is
    announced as ``batch.cancelled``. True if that ended it (nothing of it was left): the
    caller announces the end then."""
    return bool(await scripts.named("run_cancelling").run(redis, _keys(run), [run, _now()]))


async def record_finish(redis: Redis, run: str, job_id: str, status: str) -> bool:
    """Count a finished job in its run, once; True if it was the run's last (it ended)."""
    counted = await scripts.named("run_finish").run(
        redis, _keys(run), [run, job_id, status, _now()]
    )
    return decode_run_finish(counted) is RunCounted.ENDED


async def record_finishes(redis: Redis, run: str, job_ids: list[str], status: str) -> bool:
    """``record_finish`` for many jobs of one run in one call (a batch cancel that withdrew
    them from the queue); True if the run ended with them."""
    if not job_ids:
        return False
    reply = await scripts.named("run_finish_many").run(
        redis, _keys(run), [run, status, _now(), *job_ids]
    )
    return decode_finish_many(reply).ended


@dataclass(frozen=True)
class RunRecord:
    """A run as Redis holds it now."""

    run: str
    total: int
    succeeded: int
    failed: int
    cancelled: int
    #: jobs enqueued and not finished: in flight or waiting
    unfinished: int
    #: jobs of the run a worker is running now (from the workers' in-flight record)
    in_flight: int
    tenant: str | None
    priority: str
    created_at: float | None
    sealed: bool
    ended_at: float | None
    #: jobs enqueued per model (a run usually has one)
    models: dict[str, int] = field(default_factory=dict)
    callback: dict[str, Any] | None = None
    #: a cancel of the whole run began (``mark_cancelling``): it ends as cancelled
    cancel_requested: bool = False

    @property
    def waiting(self) -> int:
        return max(0, self.unfinished - self.in_flight)

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.cancelled

    def counts(self) -> dict[str, int]:
        """The counts every surface shows (``mimoq batch status --json``, the dashboard)."""
        return {
            "total": self.total,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "in_flight": self.in_flight,
            "waiting": self.waiting,
        }


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def read_run(redis: Redis, run: str) -> RunRecord | None:
    """The run's record, or None if Redis has none (never enqueued, or expired)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(wire.run_key(run))
        pipe.scard(wire.run_pending_key(run))
        pipe.hkeys(wire.INFLIGHT_KEY)  # every worker slot of the fleet: small
        raw, unfinished, running = await pipe.execute()
    if not raw:
        return None
    fields = {_text(k): _text(v) for k, v in raw.items()}
    in_flight = 0
    if running and unfinished:
        member = await redis.smismember(wire.run_pending_key(run), list(running))  # type: ignore[misc]
        in_flight = sum(1 for m in member if m)

    def number(name: str) -> int:
        return int(fields.get(name) or 0)

    tenant = fields.get("tenant")
    ended = fields.get("ended_at")
    created = fields.get("created_at")
    return RunRecord(
        run=run,
        total=number("total"),
        succeeded=number("succeeded"),
        failed=number("failed"),
        cancelled=number("cancelled"),
        unfinished=int(unfinished),
        in_flight=in_flight,
        tenant=None if tenant in (None, wire.NO_TENANT) else tenant,
        priority=fields.get("priority") or "interactive",
        created_at=float(created) if created else None,
        sealed="sealed" in fields,
        ended_at=float(ended) if ended else None,
        models={
            k.removeprefix("model:"): int(v) for k, v in fields.items() if k.startswith("model:")
        },
        callback=json.loads(fields["callback"]) if fields.get("callback") else None,
        cancel_requested="cancelling_at" in fields,
    )


async def active_runs(redis: Redis, *, limit: int = 50) -> list[RunRecord]:
    """Runs not ended yet, oldest first; runs whose record expired are dropped from the list."""
    names = [_text(n) for n in await redis.zrange(wire.RUNS_ACTIVE_KEY, 0, limit - 1)]
    out: list[RunRecord] = []
    for name in names:
        record = await read_run(redis, name)
        if record is None:
            await redis.zrem(wire.RUNS_ACTIVE_KEY, name)
            continue
        out.append(record)
    return out
