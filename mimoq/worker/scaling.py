"""Reads the autoscaling signal's inputs from Redis and computes ``mimoq_desired_workers``.

The formula is in ``desired_workers`` (pure). Its inputs, all fleet-wide:

- each account+model's grant rate: the limiter's paced rate (the quota × target × the
  rate factor after 429s; a token quota binds at the recent tokens per call);
- each account+model's call latency p90: the live workers' heartbeats carry the p90 of
  their recent calls (``call_latency``); without one, the limiter's latency EWMA plus two
  mean deviations; without that, ``UNOBSERVED_LATENCY_S``;
- each model's jobs: waiting for admission (both lanes), admitted, holding a ticket, in
  flight; and the rest of arq's queue as jobs of no known model, counting only jobs due
  within ``SCHEDULED_HORIZON_S`` (a job scheduled for tonight is not work for now).

One computation is O(accounts × models + tenants waiting + workers): a worker does it once
per heartbeat, from the beat's one depth reading (``depth.sample``), ``mimoq serve`` once
per scrape of its ``/metrics``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Final

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from mimoq.core import wire
from mimoq.core.errors import ConfigurationError
from mimoq.core.keypool import usable_pool
from mimoq.core.settings import Settings
from mimoq.worker import metrics
from mimoq.worker.capacity import planning_latency_s
from mimoq.worker.depth import Depth, read_waiting
from mimoq.worker.desired_workers import (
    DesiredWorkers,
    FleetWork,
    QuotaFeed,
    desired_workers,
    fleet_p90,
)
from mimoq.worker.heartbeat import read_beats
from mimoq.worker.limiter.config import LimiterConfig
from mimoq.worker.limiter.core import LimiterSnapshot, RedisLimiter
from mimoq.worker.limiter.observed_capacity import UNOBSERVED_LATENCY_S, snapshot_request_rate

log = structlog.get_logger("mimoq.scaling")

#: A job in arq's queue due further ahead than this (scheduled with a defer) is not demand
#: yet: it would keep a worker up for nothing, and an autoscaler starts one in well under
#: this once the job is due.
SCHEDULED_HORIZON_S: Final = 60.0


def account_names(settings: Settings) -> list[str]:
    """The accounts the workers route to (their limiters' names), as the settings name them."""
    try:
        return [account.name for account in usable_pool(settings)]
    except ConfigurationError:  # a broken key stops the workers, not this read
        return [LimiterConfig.from_settings(settings).account]


async def fleet_latency_p90s(redis: Redis) -> dict[tuple[str, str], float]:
    """The fleet's call latency p90 per (account, model), from the live workers' heartbeats."""
    now = time.time()
    samples: dict[tuple[str, str], list[tuple[float, int]]] = {}
    for beat in await read_beats(redis):
        if beat.age_s(now) > beat.ttl_s:
            continue
        for sample in beat.call_latency:
            samples.setdefault((sample.account, sample.model), []).append(
                (sample.p90_s, sample.calls)
            )
    out: dict[tuple[str, str], float] = {}
    for key, pairs in samples.items():
        p90 = fleet_p90(pairs)
        if p90 is not None:
            out[key] = p90
    return out


def _latency(snapshot: LimiterSnapshot, measured: float | None) -> float:
    if measured is not None:
        return measured
    if snapshot.latency_ewma_s is not None:
        return planning_latency_s(snapshot.latency_ewma_s, snapshot.latency_deviation_s or 0.0)
    return UNOBSERVED_LATENCY_S


async def read_desired_workers(
    redis: Redis, settings: Settings, depth: Depth | None = None
) -> DesiredWorkers:
    """The fleet's desired worker count now, with the figures it came from. ``depth``: a
    reading of the fleet's depth just taken (a worker's heartbeat has one), whose wait
    lists and queue are used instead of reading them again."""
    config = LimiterConfig.from_settings(settings)
    models = config.models()
    by_model = dict.fromkeys(models, 0)
    horizon_ms = int((time.time() + SCHEDULED_HORIZON_S) * 1000)
    if depth is None:
        for (model, _), jobs in (await read_waiting(redis)).items():
            by_model[model] = by_model.get(model, 0) + jobs
        queued = int(await redis.zcount(wire.QUEUE_NAME, "-inf", horizon_ms))
    else:
        for model, jobs in depth.waiting_by_model.items():
            by_model[model] = by_model.get(model, 0) + jobs
        queued = depth.in_queue_by(horizon_ms)
    if not settings.limiter.enabled:
        # No limiter state to split the queue by model: all of it is demand, uncapped.
        work = FleetWork(by_model=by_model, other=queued)
        return desired_workers(work, None, concurrency=settings.worker.concurrency)
    p90s = await fleet_latency_p90s(redis)
    feeds: list[QuotaFeed] = []
    in_queue = 0  # the queue's jobs that the limiters can attribute to a model
    for number, account in enumerate(account_names(settings)):
        limiter = RedisLimiter(dataclasses.replace(config, account=account), redis)
        for model in models:
            snapshot = await limiter.snapshot(model)
            held = snapshot.tickets + snapshot.in_flight
            if number == 0:  # the admitted look-ahead is the model's, shared by accounts
                held += int(snapshot.lanes.get("admitted", 0))
            by_model[model] += held
            in_queue += held
            latency = _latency(snapshot, p90s.get((account, model)))
            feeds.append(QuotaFeed(model, account, snapshot_request_rate(snapshot), latency))
    work = FleetWork(by_model=by_model, other=max(0, queued - in_queue))
    return desired_workers(work, feeds, concurrency=settings.worker.concurrency)


async def sample_desired_workers(redis: Redis, settings: Settings, depth: Depth) -> None:
    """A worker's ``mimoq_desired_workers``, from its heartbeat's depth reading. A Redis
    error keeps the last value (logged): the polling loop reports a dead Redis by itself."""
    try:
        desired = await read_desired_workers(redis, settings, depth)
    except RedisError as exc:
        log.warning("scaling.read_failed", error=type(exc).__name__)
        return
    metrics.desired_workers_computed(desired.workers)
