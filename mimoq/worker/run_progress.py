"""A run's progress and ETA, read from Redis alone (no batch process needs to be watching).

The counts come from the run's record (``mimoq.core.runs``); the ETA from the pure
estimator (``mimoq.core.eta``) fed with what the fleet limiter logged: the grant times of
the run's model(s) in the last window, split by lane, and the backlogs of the other
tenants waiting in the run's lane. Reading it costs O(grants in one window) per model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from mimoq.core import runs, wire
from mimoq.core.eta import Estimate, LaneLoad, estimate, measured_rate, split_by_model
from mimoq.core.jobs import LANES
from mimoq.core.runs import RunRecord
from mimoq.core.settings import Settings
from mimoq.worker.limiter.admission import waiting_depth
from mimoq.worker.limiter.config import KEY_PARTS, LimiterConfig, limiter_keys

_LOG, _ILOG, _STATE = KEY_PARTS.index("log"), KEY_PARTS.index("ilog"), KEY_PARTS.index("state")
#: Competing tenants looked at per lane (the ring's first ones; the rest share alike).
_MAX_COMPETITORS = 1_000


@dataclass(frozen=True)
class RunProgress:
    """A run's counts and when it is expected to end."""

    record: RunRecord
    estimate: Estimate

    @property
    def ended(self) -> bool:
        return self.record.ended_at is not None

    def to_dict(self) -> dict[str, Any]:
        r = self.record
        eta = Estimate(0.0, r.ended_at) if self.ended else self.estimate
        return {
            "run": r.run,
            **r.counts(),
            **eta.to_dict(),
            "tenant": r.tenant,
            "priority": r.priority,
            "created_at": r.created_at,
            "sealed": r.sealed,
            "ended_at": r.ended_at,
        }


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def lane_load(
    redis: Redis,
    config: LimiterConfig,
    model: str,
    *,
    lane: str,
    tenant: str | None,
    now: float,
) -> LaneLoad:
    """The rate ``lane`` of ``model`` is granted now (measured over the last window) and the
    backlogs of the tenants other than ``tenant`` that wait in it."""
    keys = limiter_keys(config.account, model)
    since = f"({now - config.window_s}"
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zrangebyscore(keys[_LOG], since, "+inf", withscores=True)
        pipe.zrangebyscore(keys[_ILOG], since, "+inf", withscores=True)
        pipe.hmget(keys[_STATE], ["lat", "lat_dev", "tok_base", "tok_rate", "audio"])
        grants, interactive, (latency, deviation, *call) = await pipe.execute()
    interactive_ids = {_text(lease) for lease, _ in interactive}
    if lane == "interactive":
        times = [t for _, t in interactive]
    else:
        times = [t for lease, t in grants if _text(lease) not in interactive_ids]
    rate = measured_rate(times, now=now, window_s=config.window_s) or paced_rate(
        config, model, *call
    )
    depths = await waiting_depth(redis, model, lane, max_tenants=_MAX_COMPETITORS)
    own = tenant or "_"
    lat = float(latency) if latency is not None and float(latency) >= 0 else 0.0
    # The run ends when the slowest of its last calls answers: a mean latency plus twice its
    # mean deviation (about the largest of a few, for call times skewed like MiMo's).
    lat += 2 * max(0.0, float(deviation)) if deviation is not None and lat > 0 else 0.0
    return LaneLoad(
        rate_per_s=rate,
        competitors=tuple(n for t, n in depths.items() if t != own and n > 0),
        latency_s=lat,
        last_grant_ago_s=now - max(times) if times else None,
    )


def paced_rate(
    config: LimiterConfig,
    model: str,
    tok_base: bytes | str | None = None,
    tok_rate: bytes | str | None = None,
    audio: bytes | str | None = None,
) -> float:
    """Calls a second the quota's pace allows ``model``: its requests, and, once the limiter
    knows a token-limited model's typical call (``audio``, the seconds of the calls it
    granted), its tokens at that call's measured cost (``tok_base`` + ``tok_rate`` per audio
    second; the configured ones until measured). Without the tokens, a run of long
    recordings was given twice the calls a second its token quota lets through."""
    quota = config.quota(model)
    pace = config.target / config.window_s
    rate = quota.requests * pace
    if quota.tokens and audio is not None:
        base = float(tok_base) if tok_base is not None else config.tokens_per_call
        per_s = float(tok_rate) if tok_rate is not None else config.tokens_per_audio_s
        rate = min(rate, quota.tokens * pace / max(base + per_s * float(audio), 1.0))
    return rate


async def redis_now(redis: Redis) -> float:
    """Redis TIME, the clock the limiter logs its grants on."""
    seconds, micros = await redis.time()
    return float(seconds) + float(micros) / 1e6


#: Up to this many unfinished jobs, which of them run is read from arq's in-progress keys
#: (exact, O(unfinished)); past it, from the workers' in-flight record (a heartbeat old).
_EXACT_IN_FLIGHT_UPTO = 200


async def _exact_in_flight(redis: Redis, record: RunRecord) -> RunRecord:
    """The record with its jobs in flight counted exactly near the end of a run, where a
    heartbeat-old count would hold finished calls as waiting (and the ETA late)."""
    if not 0 < record.unfinished <= _EXACT_IN_FLIGHT_UPTO:
        return record
    ids = [_text(i) for i in await redis.smembers(wire.run_pending_key(record.run))]  # type: ignore[misc]
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.exists(wire.in_progress_key(job_id))
        running = sum(1 for n in await pipe.execute() if n)
    return dataclasses.replace(record, in_flight=running)


async def progress_of(
    redis: Redis, settings: Settings, record: RunRecord, *, now: float | None = None
) -> RunProgress:
    """``record``'s ETA added (``now``: Redis TIME unless a test injects it)."""
    if record.ended_at is not None:
        return RunProgress(record, Estimate(0.0, record.ended_at))
    now = await redis_now(redis) if now is None else now
    record = await _exact_in_flight(redis, record)
    waiting = split_by_model(record.waiting, record.models)
    config = LimiterConfig.from_settings(settings)
    lane = record.priority if record.priority in LANES else "interactive"
    loads = {
        model: await lane_load(redis, config, model, lane=lane, tenant=record.tenant, now=now)
        for model in waiting
    }
    if not waiting and record.in_flight:
        loads = {
            model: await lane_load(redis, config, model, lane=lane, tenant=record.tenant, now=now)
            for model in record.models
        }
    found = estimate(waiting_by_model=waiting, in_flight=record.in_flight, loads=loads, now=now)
    return RunProgress(record, found)


async def read_progress(
    redis: Redis, settings: Settings, run: str, *, now: float | None = None
) -> RunProgress | None:
    """The run's progress, or None if Redis has no record of it."""
    record = await runs.read_run(redis, run)
    return None if record is None else await progress_of(redis, settings, record, now=now)


async def active_progress(
    redis: Redis, settings: Settings, *, limit: int = 50
) -> list[RunProgress]:
    """Every run not ended yet (the dashboard's runs panel)."""
    now = await redis_now(redis)
    return [
        await progress_of(redis, settings, record, now=now)
        for record in await runs.active_runs(redis, limit=limit)
    ]
