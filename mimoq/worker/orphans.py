"""Orphan recovery: a dead worker's jobs run again within seconds, not after arq's timeout.

arq marks a job it runs with ``arq:in-progress:<id>`` for the job timeout + 10 s; a worker
killed mid-job leaves that key behind, and nobody runs the job again until it expires
(315 s with the default ``MIMOQ_JOB_TIMEOUT_S``). mimoq shortens that to the heartbeat:

* every worker records the ids it is running in the hash ``mimoq:inflight`` (job id →
  worker id), from arq's polling loop, right after it takes them;
* once per heartbeat interval (and at start-up) every worker looks at the owners in that
  hash; an owner whose heartbeat record is gone, or has not been renewed for
  ``_MISSED_BEATS`` intervals, is dead, and each of its jobs is handed back to the queue
  by deleting the in-progress key, atomically and only if the entry still names that
  owner, the owner still has not beaten and the job key still exists (a finished job has
  none, so it is never run again; a job that wrote its result but died before arq marked
  it done is run again and finds its result: MiMo is not called twice).

A job therefore runs again within about three heartbeat intervals of its worker dying,
whatever the job timeout. Queue entries scored 0 (arq's "not queued": a raw ZADD with the
wrong score) are rescored to now on the same round, so they run instead of waiting forever.
After this worker loses Redis (a command failed, or waited out an outage) it waits before
judging others: their beats were lost to the same outage.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Final

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from mimoq.core import redis_retry, scripts, wire
from mimoq.core.scripts.replies import Requeued, decode_requeue
from mimoq.worker import heartbeat as hb

log = structlog.get_logger("mimoq.orphans")

#: An owner that has not beaten for this many of its intervals is dead (its record lives
#: for HEARTBEAT_TTL_FACTOR of them): detected ≤ 2 intervals after its last beat, and found
#: by a survivor's sweep within one more.
_MISSED_BEATS: Final = 2.0
_ZERO_SCORE_BATCH: Final = 100


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class OrphanWatch:
    """One worker's side of orphan recovery: record its own jobs, recover dead ones'."""

    def __init__(
        self,
        worker_id: str,
        interval_s: float,
        *,
        enabled: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
        restored_at: Callable[[], float] = redis_retry.last_restored_at,
    ) -> None:
        self.worker_id = worker_id
        self.interval_s = interval_s
        self.enabled = enabled
        self._monotonic = monotonic
        self._restored_at = restored_at  # on the same clock as ``monotonic``
        self._recorded: set[str] = set()
        self._next_sweep = float("-inf")  # at start-up: at once
        self._failing = False

    async def tick(self, redis: Redis, running: Iterable[str]) -> None:
        """Called on every poll: record changes in our jobs; sweep once per interval.

        Redis errors are logged once per outage, never raised: a worker without Redis
        keeps its in-flight jobs running (arq reports the outage itself).
        """
        try:
            await self._record(redis, set(running))
            if self.enabled and self._due():
                self._next_sweep = self._monotonic() + self.interval_s
                await self.sweep(redis)
        except RedisError as exc:
            if not self._failing:
                log.warning("orphans.redis_unavailable", error=type(exc).__name__)
            self._failing = True
            # Others' beats were lost to the same outage: give them an interval to return.
            self._next_sweep = self._monotonic() + self.interval_s
            return
        self._failing = False

    def _due(self) -> bool:
        return not self._just_restored() and self._monotonic() >= self._next_sweep

    def _just_restored(self) -> bool:
        """Redis came back a moment ago (commands waited out the outage rather than failing):
        every worker's beat lapsed with it; give the others time to reconnect and beat again:
        their next try may be a whole backoff away, and a loaded host adds to that (the cost
        of waiting longer is only a dead worker's jobs re-run a little later)."""
        grace_s = hb.HEARTBEAT_TTL_FACTOR * self.interval_s + 2 * redis_retry.BACKOFF_CAP_S
        return self._monotonic() - self._restored_at() < grace_s

    async def _record(self, redis: Redis, running: set[str]) -> None:
        added, gone = running - self._recorded, self._recorded - running
        if not added and not gone:
            return
        forget = scripts.named("orphans_forget")
        keys, args = [wire.INFLIGHT_KEY], [self.worker_id, *gone]
        async with redis.pipeline(transaction=False) as pipe:
            if added:
                pipe.hset(wire.INFLIGHT_KEY, mapping=dict.fromkeys(added, self.worker_id))
            if gone:
                forget.queue(pipe, keys, args)
            replies = await pipe.execute(raise_on_error=False)
        for reply in replies[: 1 if added else 0]:
            if isinstance(reply, Exception):
                raise reply
        if gone:
            await forget.settle(redis, replies[-1], keys, args)
        self._recorded = running

    async def sweep(self, redis: Redis) -> int:
        """Re-queue every dead worker's jobs and rescore 0-scored entries; the jobs re-queued."""
        await self._rescore_zeros(redis)
        entries = {
            _text(job): _text(owner)
            for job, owner in (await redis.hgetall(wire.INFLIGHT_KEY)).items()  # type: ignore[misc]
        }
        owners = sorted({o for o in entries.values() if o != self.worker_id})
        if not owners:
            return 0
        thresholds = await _dead_below_ms(redis, owners, self.interval_s)
        requeued = 0
        for job_id, owner in entries.items():
            # The sweep began before an outage and its reads waited it out: the beats it
            # read lapsed with Redis, not with their workers (each requeue may wait too).
            if self._just_restored():
                break
            if owner not in thresholds:
                continue
            # re-checked in the script: the entry still names the owner, which still has
            # not beaten, and the job still exists (orphans_requeue.lua)
            outcome = await scripts.named("orphans_requeue").run(
                redis,
                [
                    wire.INFLIGHT_KEY,
                    wire.WORKER_HEARTBEAT_PREFIX + owner,
                    wire.in_progress_key(job_id),
                    wire.job_key(job_id),
                    wire.QUEUE_NAME,
                ],
                [job_id, owner, str(thresholds[owner])],
            )
            if decode_requeue(outcome) is Requeued.REQUEUED:
                requeued += 1
                log.warning("orphans.requeued", job_id=job_id, dead_worker=owner)
        return requeued

    async def _rescore_zeros(self, redis: Redis) -> None:
        ids = await redis.zrangebyscore(wire.QUEUE_NAME, 0, 0, start=0, num=_ZERO_SCORE_BATCH)
        if ids:
            fixed = await scripts.named("orphans_rescore_zero").run(redis, [wire.QUEUE_NAME], ids)
            if int(fixed):
                log.warning("orphans.rescored_zero", jobs=int(fixed))

    async def forget_finished(self, redis: Redis, running: Iterable[str]) -> None:
        """On a clean stop: drop the entries of jobs no longer running (the rest, cancelled
        past the grace period, are left for a survivor to re-queue at once)."""
        # Without Redis, a survivor finds the entries; their jobs are done, nothing re-runs.
        with contextlib.suppress(RedisError):
            await self._record(redis, set(running))


async def _dead_below_ms(
    redis: Redis, owners: list[str], default_interval_s: float
) -> dict[str, int]:
    """For each owner that is dead now: the PTTL below which its heartbeat means dead."""
    keys = [wire.WORKER_HEARTBEAT_PREFIX + o for o in owners]
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.pttl(key)
        pipe.mget(keys)
        *ttls, raws = await pipe.execute()
    dead: dict[str, int] = {}
    for owner, ttl, raw in zip(owners, ttls, raws, strict=True):
        interval_s, ttl_s = default_interval_s, default_interval_s * hb.HEARTBEAT_TTL_FACTOR
        if raw is not None:
            try:
                beat = hb.WorkerBeat.model_validate_json(raw)
                interval_s, ttl_s = beat.interval_s, beat.ttl_s
            except ValueError:
                pass
        below_ms = int((ttl_s - _MISSED_BEATS * interval_s) * 1000)
        ttl = int(ttl)
        if ttl == -2 or (ttl >= 0 and ttl < below_ms):
            dead[owner] = max(below_ms, 1)
    return dead
