"""Queue depth: every job not finished yet, by lane, kind and state.

The states a job goes through before its result (docs/production.md, "Queue depth"):

- ``waiting``: waiting for admission in ``mimoq:wait:<model>:…:tenant:<t>`` (bulk jobs, and
  interactive jobs of a tenant past its 16 in the queue); not in ``mimoq:queue`` yet;
- ``queued``: in ``mimoq:queue``, due now, no worker running it yet;
- ``deferred``: in ``mimoq:queue`` with a run-at time still to come (a defer, a quota
  deferral, a retry's backoff, a long job waiting for its chunks);
- ``in_flight``: a worker runs it (arq keeps it in the queue meanwhile: counted here only).

Cost: O(jobs in ``mimoq:queue``) for the queued and deferred states (a ZSCAN and paged
MGETs of their job keys; bulk backlogs wait outside the queue, so it stays short) plus
O(tenants) LLENs for the waiting ones and O(fleet slots) for the ones in flight.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from mimoq.core import dialect_constants as dc
from mimoq.core import wire
from mimoq.core.jobs import LANES
from mimoq.worker import metrics
from mimoq.worker.limiter.admission import waiting_depth, waiting_models

log = structlog.get_logger("mimoq.heartbeat")

STATES: Final = ("queued", "waiting", "deferred", "in_flight")
#: The lane of what is not a speech or transcription job (callbacks, invalid, expired).
NO_LANE: Final = "none"
_PAGE: Final = 500
#: Every tenant of a model's ring is counted (the dashboard shows the first few by name).
_ALL_TENANTS: Final = 1_000_000

_TASK_KIND: Final = {
    wire.TASK_SPEECH: "speech",
    wire.TASK_TRANSCRIPTION: "transcription",
    wire.TASK_CALLBACK: "callback",
    wire.TASK_INVALID: "invalid",
}


def job_kind_and_lane(raw: bytes | None) -> tuple[str, str]:
    """(kind, lane) of one ``arq:job:<id>`` value; kind ``expired`` when the key is gone,
    ``other`` when it is not one of mimoq's tasks."""
    if raw is None:
        return "expired", NO_LANE
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return "other", NO_LANE
    task = data.get("f") if isinstance(data, dict) else None
    kind = _TASK_KIND.get(task, "other") if isinstance(task, str) else "other"
    if kind not in ("speech", "transcription"):
        return kind, NO_LANE
    job = (data.get("k") or {}).get("job") if isinstance(data.get("k"), dict) else None
    lane = job.get("priority", "interactive") if isinstance(job, dict) else "interactive"
    return kind, lane if lane in LANES else "interactive"


def model_kind(model: str) -> str:
    return "transcription" if model == dc.ASR_MODEL else "speech"


@dataclass(frozen=True)
class Depth:
    """Counts of unfinished jobs keyed by (state, lane, kind), and what else the one reading
    saw, so that every consumer of a heartbeat's reading (the queue gauges, the desired
    workers) takes it from here instead of reading Redis again."""

    counts: dict[tuple[str, str, str], int]
    #: jobs waiting for admission per model, both lanes, every tenant
    waiting_by_model: dict[str, int] = field(default_factory=dict)
    #: the run-at score (ms) of every member of ``mimoq:queue``, in flight or not
    queue_scores: tuple[float, ...] = ()
    #: ``mimoq_queue_depth``: due now and not in flight; deferred (in flight or not: a run
    #: that ends in a deferral re-scores its job before it leaves ``mimoq:inflight``)
    due: int = 0
    deferred: int = 0

    def in_queue_by(self, until_ms: float) -> int:
        """Members of ``mimoq:queue`` due by ``until_ms`` (the ones in flight included)."""
        return sum(1 for score in self.queue_scores if score <= until_ms)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def by_state(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        for (state, _, _), n in self.counts.items():
            out[state] += n
        return out

    def kinds_in(self, state: str) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (s, _, kind), n in self.counts.items():
            if s == state:
                out[kind] += n
        return dict(sorted(out.items()))

    def rows(self) -> list[dict[str, Any]]:
        """JSON rows, in a stable order: ``{"state", "lane", "kind", "count"}``."""
        order = {s: i for i, s in enumerate(STATES)}
        keys = sorted(self.counts, key=lambda k: (order[k[0]], k[1], k[2]))
        return [
            {"state": s, "lane": lane, "kind": kind, "count": self.counts[(s, lane, kind)]}
            for s, lane, kind in keys
        ]

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "by_state": self.by_state(), "depth": self.rows()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _classified(redis: Redis, ids: list[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for start in range(0, len(ids), _PAGE):
        page = ids[start : start + _PAGE]
        out.extend(
            job_kind_and_lane(raw) for raw in await redis.mget([wire.job_key(i) for i in page])
        )
    return out


async def running_ids(redis: Redis) -> set[str]:
    """Jobs a worker runs now: arq's in-progress keys (SCAN, never KEYS)."""
    pattern = wire.ARQ_IN_PROGRESS_PREFIX + "*"
    cut = len(wire.ARQ_IN_PROGRESS_PREFIX)
    return {_text(k)[cut:] async for k in redis.scan_iter(match=pattern, count=_PAGE)}


async def _queue_members(redis: Redis) -> dict[str, float]:
    members: dict[str, float] = {}  # ZSCAN may return a member twice while rehashing
    async for member, score in redis.zscan_iter(wire.QUEUE_NAME, count=_PAGE):
        members[_text(member)] = score
    return members


async def read_waiting(redis: Redis) -> dict[tuple[str, str], int]:
    """Jobs waiting for admission per (model, lane), every tenant: O(models × tenants)."""
    out: dict[tuple[str, str], int] = {}
    for model in await waiting_models(redis):
        for lane in LANES:
            depths = await waiting_depth(redis, model, lane, max_tenants=_ALL_TENANTS)
            out[(model, lane)] = sum(depths.values())
    return out


async def read_depth(redis: Redis, now_ms: int, running: Iterable[str] | None = None) -> Depth:
    """Every unfinished job by (state, lane, kind). ``running``: the ids in flight, if the
    caller knows them (else arq's in-progress keys are scanned)."""
    in_flight = set(running) if running is not None else await running_ids(redis)
    members = await _queue_members(redis)
    counts: Counter[tuple[str, str, str]] = Counter()
    queued = [(i, s) for i, s in members.items() if i not in in_flight]
    for (_, score), (kind, lane) in zip(
        queued, await _classified(redis, [i for i, _ in queued]), strict=True
    ):
        counts[("queued" if score <= now_ms else "deferred", lane, kind)] += 1
    for kind, lane in await _classified(redis, sorted(in_flight)):
        counts[("in_flight", lane, kind)] += 1
    waiting_by_model: Counter[str] = Counter()
    for (model, lane), total in (await read_waiting(redis)).items():
        waiting_by_model[model] += total
        if total:
            counts[("waiting", lane, model_kind(model))] += total
    scores = tuple(members.values())
    return Depth(
        dict(counts),
        waiting_by_model=dict(waiting_by_model),
        queue_scores=scores,
        due=sum(1 for i, score in queued if score <= now_ms),
        deferred=sum(1 for score in scores if score > now_ms),
    )


async def sample(redis: Redis, now_ms: int, *, dead_letter_ttl_s: float) -> Depth | None:
    """The queue gauges (``mimoq_queue_depth``, ``mimoq_unfinished_jobs``) and
    ``mimoq_dead_letters_stored`` from one reading, which it returns for the other
    consumers of the beat (None: Redis failed; logged, a missed sample must not stop a beat).
    ``now_ms``: the beat's wall clock."""
    dead_since = now_ms / 1000 - dead_letter_ttl_s
    # The in-flight ids first, then the queue: arq leaves a running job in the queue, so a
    # job taken in between counts once, as queued (as it was when the ids were read), and
    # one that finished in between once, as in flight; none is counted twice.
    try:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hkeys(wire.INFLIGHT_KEY)
            # within retention: the index may still name expired ones until its next write
            pipe.zcount(wire.DEAD_LETTER_INDEX, repr(dead_since), "+inf")
            ids, dead = await pipe.execute()
        depth = await read_depth(redis, now_ms, [_text(k) for k in ids])
    except RedisError as exc:
        log.warning("depth.sample_failed", error=type(exc).__name__)
        return None
    metrics.fleet_sampled(due=depth.due, deferred=depth.deferred, dead_letters=int(dead))
    metrics.unfinished_sampled(depth.counts)
    return depth
