"""The workers' periodic admission round: the safety net under the admissions grants make.

Every grant admits the next waiting bulk job of its model (in the acquire script), and
enqueue.lua admits the first job of an idle model at once. This round, run from each
worker's polling loop at most once per ``interval_s``, covers what neither sees: a model
whose admitted jobs all failed before asking for a slot, and limits switched off. With
limits on, one worker of the fleet runs a model's round per interval
(``mimoq:admit-round:<model>``, set NX): every worker ran each one, about 17 commands per
worker, model and second, a fixed cost that grew with the fleet (issue #22). With limits
off the rounds are how waiting bulk jobs are admitted at all (a batch each), so every
worker still runs them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from mimoq.core import dialect_constants as dc
from mimoq.core import wire
from mimoq.worker import metrics
from mimoq.worker.limiter.core import ADMIT_INTERVAL_S, MAX_TENANTS_SHOWN, Limiter

log = structlog.get_logger("mimoq.limiter")

#: A model's round is held for this share of the interval: a worker back a little early
#: for its next round is not kept from it by its own hold.
_HOLD_SHARE: Final = 0.9


class Admitter:
    """Runs ``Limiter.admit`` for every model with waiting jobs, at most once per interval."""

    def __init__(
        self,
        limiter: Limiter,
        *,
        interval_s: float = ADMIT_INTERVAL_S,
        gauge_interval_s: float = 0.0,
        one_per_fleet: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limiter = limiter
        self.interval_s = interval_s
        #: whether one worker of the fleet runs a model's round per interval (limits on)
        self.one_per_fleet = one_per_fleet
        #: the waiting gauges are sampled at most this often (the worker passes its
        #: heartbeat's interval, as the fleet's other gauges): each sample reads every
        #: tenant's list of each model and lane, about 14 commands a second a worker when
        #: every round sampled them (issue #22)
        self.gauge_interval_s = gauge_interval_s
        self._clock = clock
        self._next = 0.0
        self._next_gauges = 0.0

    async def tick(self, redis: Redis) -> int:
        """One round if one is due; returns the jobs admitted. Redis errors are logged only:
        the polling loop that calls this reports a dead Redis by itself."""
        now = self._clock()
        if now < self._next:
            return 0
        self._next = now + self.interval_s
        gauges = now >= self._next_gauges
        if gauges:
            self._next_gauges = now + self.gauge_interval_s
        try:
            admitted = 0
            for model in await waiting_models(redis):
                if await self._holds_round(redis, model):
                    admitted += await self.limiter.admit(model)
                for lane in ("bulk", "interactive") if gauges else ():
                    metrics.waiting(model, await waiting_depth(redis, model, lane), lane)
        except RedisError as exc:
            log.warning("limiter.admit_failed", error=type(exc).__name__)
            return 0
        return admitted

    async def _holds_round(self, redis: Redis, model: str) -> bool:
        """Whether this worker runs ``model``'s round now: no other worker has run it within
        the interval. (Every worker runs every round with limits off, and with an interval
        of 0, as a test's.)"""
        hold_ms = int(self.interval_s * _HOLD_SHARE * 1000)
        if hold_ms <= 0 or not self.one_per_fleet:
            return True
        return bool(await redis.set(wire.admit_round_key(model), "1", nx=True, px=hold_ms))


async def forget_admitted(redis: Redis, job_id: str, raw: Any, kind: str | None) -> None:
    """A job that ends without a grant (it failed first: a bad voice, a missing file) gives
    its admission place back at once. Otherwise it would hold the place until its entry
    ages out, and a tenant whose 16 interactive jobs all failed that way would see its next
    ones wait that long. Two commands; names as enqueue.lua wrote them (the raw fields)."""
    if not isinstance(raw, Mapping):
        return
    model = raw.get("model")
    if not isinstance(model, str) or not model:
        kind = kind or raw.get("kind")  # a job arq could not hand to its task names its kind
        model = dc.TTS_MODEL if kind == wire.TASK_SPEECH else dc.ASR_MODEL
    tenant = raw.get("tenant")
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zrem(wire.admitted_key(model), job_id)
        pipe.zrem(
            wire.interactive_admitted_key(model, tenant if isinstance(tenant, str) else None),
            job_id,
        )
        await pipe.execute()


async def waiting_depth(
    redis: Redis, model: str, lane: str = "bulk", *, max_tenants: int = MAX_TENANTS_SHOWN
) -> dict[str, int]:
    """Jobs of ``model`` and ``lane`` waiting for admission, per tenant (the first
    ``max_tenants`` of the ring; ``_`` is the jobs that name no tenant). O(tenants shown)."""
    ring_key = wire.wait_ring_key(model, lane)
    ring = await redis.lrange(ring_key, 0, max_tenants - 1)  # type: ignore[misc]
    tenants = [t.decode() if isinstance(t, bytes) else str(t) for t in ring]
    async with redis.pipeline(transaction=False) as pipe:
        for tenant in tenants:
            pipe.llen(wire.wait_list_key(model, tenant, lane))
        depths = await pipe.execute()
    return {t: int(d) for t, d in zip(tenants, depths, strict=True)}


async def waiting_models(redis: Redis) -> list[str]:
    """The models that have jobs waiting for admission (in either lane)."""
    models = await redis.smembers(wire.WAIT_MODELS_KEY)  # type: ignore[misc]
    return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in models)
