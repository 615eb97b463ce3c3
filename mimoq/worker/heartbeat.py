"""Worker heartbeats: a JSON record per worker in Redis with a TTL, and the liveness it implies.

Each worker writes ``wire.WORKER_HEARTBEAT_PREFIX + worker_id`` every
``heartbeat_interval_s`` from arq's polling loop, so a beat proves the loop that picks jobs
is turning (not merely that the process exists). The key expires after
``HEARTBEAT_TTL_FACTOR`` intervals: a worker that died or hung disappears on its own, and a
worker that stops cleanly deletes its key. Any monitor can read the records with SCAN + GET;
``mimoq health`` does exactly that.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Final, Protocol

import structlog
from pydantic import BaseModel, ConfigDict, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from mimoq.core import wire
from mimoq.core.settings import Settings
from mimoq.worker import metrics
from mimoq.worker.call_latency import CALL_LATENCIES, CallLatencies, LatencySample

log = structlog.get_logger("mimoq.heartbeat")

#: A record expires after this many missed intervals.
HEARTBEAT_TTL_FACTOR: Final = 3
_SCAN_COUNT: Final = 500


class WorkerLike(Protocol):
    """What a heartbeat reads from arq's worker."""

    tasks: dict[str, asyncio.Task[Any]]
    allow_pick_jobs: bool
    jobs_complete: int
    jobs_failed: int
    jobs_retried: int


class WorkerBeat(BaseModel):
    """One worker's heartbeat record, as stored in Redis (JSON)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    worker_id: str
    host: str
    pid: int
    started_at: float  # unix seconds
    beat_at: float  # unix seconds, the worker's clock
    interval_s: float
    ttl_s: float
    concurrency: int
    in_flight: int = 0
    draining: bool = False  # stopping: takes no new jobs, finishes the ones it has
    jobs_complete: int = 0
    jobs_failed: int = 0
    jobs_retried: int = 0
    metrics_port: int | None = None
    #: p90 of this worker's recent MiMo calls per account+model (the autoscaling signal's)
    call_latency: list[LatencySample] = []

    def age_s(self, now: float) -> float:
        return max(0.0, now - self.beat_at)

    def live(self, now: float, *, max_age_s: float | None = None) -> bool:
        """Beat recently enough (default: within its own TTL) and still taking jobs."""
        limit = self.ttl_s if max_age_s is None else max_age_s
        return not self.draining and self.age_s(now) <= limit


def new_worker_id() -> str:
    """host-pid-random: readable in dashboards, unique even when pids repeat (containers)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


class LivenessStatus(StrEnum):
    ok = "ok"
    starting = "starting"  # the polling loop has not turned yet
    stalled = "stalled"  # the polling loop has not turned for longer than the TTL
    stopped = "stopped"


@dataclass(frozen=True)
class Liveness:
    """What ``/healthz`` answers: ``ok`` decides 200 versus 503."""

    ok: bool
    status: LivenessStatus
    worker_id: str
    draining: bool
    last_beat_age_s: float | None  # since the last heartbeat Redis accepted

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Heartbeat:
    """Writes one worker's record and knows whether its polling loop is alive."""

    def __init__(
        self,
        settings: Settings,
        *,
        worker_id: str | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        latencies: CallLatencies = CALL_LATENCIES,
    ) -> None:
        self.worker_id = worker_id or new_worker_id()
        self.key = wire.WORKER_HEARTBEAT_PREFIX + self.worker_id
        self.interval_s = settings.ops.heartbeat_interval_s
        self.ttl_s = settings.ops.heartbeat_interval_s * HEARTBEAT_TTL_FACTOR
        self.metrics_port: int | None = None
        self._concurrency = settings.worker.concurrency
        self._latencies = latencies
        self._clock = clock
        self._monotonic = monotonic
        self._started_at = clock()
        self._next_beat = float("-inf")
        self._last_tick: float | None = None
        self._last_beat: float | None = None
        self._draining = False
        self._stopped = False
        #: Samples the fleet-wide gauges once per beat from one reading, given the beat's
        #: wall clock in ms (set by the worker, ``MimoqWorker.sample_fleet``: the readers
        #: import this module, for the heartbeat records).
        self.sampler: Callable[[Redis, int], Awaitable[object]] | None = None

    def _record(self, worker: WorkerLike, in_flight: int, draining: bool) -> WorkerBeat:
        return WorkerBeat(
            worker_id=self.worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self._started_at,
            beat_at=self._clock(),
            interval_s=self.interval_s,
            ttl_s=self.ttl_s,
            concurrency=self._concurrency,
            in_flight=in_flight,
            draining=draining,
            jobs_complete=worker.jobs_complete,
            jobs_failed=worker.jobs_failed,
            jobs_retried=worker.jobs_retried,
            metrics_port=self.metrics_port,
            call_latency=self._latencies.samples(),
        )

    async def beat(self, redis: Redis, worker: WorkerLike) -> bool:
        """Called on every poll: a Redis write once per interval, or at once on draining.
        Returns whether it beat (wrote the record): what else is read once a beat goes
        with it.

        Redis errors are logged, not raised: arq's own next poll reports a dead Redis, and
        a missed beat must not take a working worker down.
        """
        if self._stopped:
            return False
        now = self._monotonic()
        self._last_tick = now
        draining = not worker.allow_pick_jobs
        in_flight = sum(not t.done() for t in worker.tasks.values())
        metrics.worker_state_sampled(in_flight=in_flight, draining=draining)
        if now < self._next_beat and draining == self._draining:
            return False
        self._draining = draining
        self._next_beat = now + self.interval_s
        record = self._record(worker, in_flight, draining)
        now_ms = int(record.beat_at * 1000)
        try:
            await redis.set(self.key, record.model_dump_json(), px=int(self.ttl_s * 1000))
        except RedisError as exc:
            log.warning("heartbeat.failed", worker_id=self.worker_id, error=type(exc).__name__)
            return False
        self._last_beat = self._monotonic()
        if self.sampler is not None:  # the fleet's gauges, one reading per beat
            await self.sampler(redis, now_ms)
        return True

    @property
    def recorded(self) -> bool:
        """Whether this worker's record has been written (it may have expired since)."""
        return self._last_beat is not None

    def liveness(self) -> Liveness:
        """Alive while the polling loop has ticked within the TTL (Redis trouble aside)."""
        now = self._monotonic()
        if self._stopped:
            status = LivenessStatus.stopped
        elif self._last_tick is None:
            status = LivenessStatus.starting
        elif now - self._last_tick > self.ttl_s:
            status = LivenessStatus.stalled
        else:
            status = LivenessStatus.ok
        beat_age = None if self._last_beat is None else round(now - self._last_beat, 3)
        ok = status is LivenessStatus.ok
        return Liveness(ok, status, self.worker_id, self._draining, beat_age)

    async def stop(self, redis: Redis | None) -> None:
        """No more beats; delete the record (a worker that left cleanly is not a dead one)."""
        self._stopped = True
        if redis is None:
            return
        try:
            await redis.delete(self.key)
        except RedisError as exc:  # the key expires on its own anyway
            log.warning("heartbeat.not_cleared", worker_id=self.worker_id, error=type(exc).__name__)


async def read_beats(redis: Redis) -> list[WorkerBeat]:
    """Every worker's current record (SCAN, never KEYS); unreadable records are skipped."""
    pattern = wire.WORKER_HEARTBEAT_PREFIX + "*"
    keys = [k async for k in redis.scan_iter(match=pattern, count=_SCAN_COUNT)]
    beats: list[WorkerBeat] = []
    for start in range(0, len(keys), _SCAN_COUNT):
        for raw in await redis.mget(keys[start : start + _SCAN_COUNT]):
            if raw is None:  # expired between SCAN and MGET
                continue
            try:
                beats.append(WorkerBeat.model_validate_json(raw))
            except ValidationError:
                continue
    return sorted(beats, key=lambda b: b.worker_id)
