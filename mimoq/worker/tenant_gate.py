"""The tenant limit gate (``MIMOQ_TENANT_LIMITS``): checked before a job's one MiMo call.

A job whose tenant has reached a limit in the current window is not sent: it is deferred
(not a try) until the window frees, and gives back its admission place so the tenant's
slots go to the others. The first worker to see the tenant over its limit marks it held
(``wire.tenant_held_key``, expiring when the window frees): only that worker logs
``tenant.limited`` (once per hit, fleet-wide); while the mark stands the admission rounds
skip the tenant (core/scripts/limiter_common.lua) and enqueue.lua keeps its new jobs in its
waiting lists, so its backlog neither takes limiter tickets nor enters the queue. The
tickets it took before the hit go back to the model's limiters as its jobs reach the gate
(core/scripts/limiter_release_tenant.lua): their slots go to the other tenants' tickets
instead of passing unused.

Usage is counted when a job finishes, so a tenant overshoots by at most the calls already
past this gate (its jobs in flight) when it reached the limit.
Cost: nothing for a tenant without limits; one round trip per attempt otherwise (the
HGET of each limited metric, pipelined), and a held job's hold one more, plus one script
per account to give back the tenant's tickets.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Final

import structlog
from redis.asyncio import Redis

from mimoq.core import wire
from mimoq.core.errors import TenantLimitDeferred
from mimoq.core.jobs import SpeechJob, TranscriptionJob
from mimoq.core.tenant_limits import NO_TENANT, Breach, TenantLimits, first_breach
from mimoq.core.usage_windows import read_window_totals
from mimoq.worker.limiter import Limiter

log = structlog.get_logger("mimoq.tenants")

#: Held jobs come back spread over this many seconds after their window frees, not at once.
SPREAD_S: Final = 1.0


async def check(
    redis: Redis,
    job: SpeechJob | TranscriptionJob,
    job_id: str,
    limits: TenantLimits,
    *,
    limiters: Sequence[Limiter] = (),
    clock: Callable[[], float] = time.time,
    rand: Callable[[], float] = random.random,
) -> None:
    """Return if ``job``'s tenant is within its limits; else hold it and raise
    ``TenantLimitDeferred`` until its window frees. ``limiters``: each account's, where the
    held tenant's tickets for the job's model go back."""
    mine = limits.for_tenant(job.tenant)
    if not mine:
        return
    now = clock()
    totals = await read_window_totals(redis, [job.tenant], limits, now)
    breach = first_breach(mine, totals.get(job.tenant or NO_TENANT, {}), now)
    if breach is None:
        return
    await hold(redis, job, job_id, breach, now)
    for limiter in limiters:  # its reserved slots go to the others, not unused
        await limiter.release_tenant(job.model, job.tenant)
    wait = max(0.001, breach.frees_at - now) + SPREAD_S * rand()
    raise TenantLimitDeferred(breach.reason(job.tenant), retry_after_s=wait)


async def hold(
    redis: Redis, job: SpeechJob | TranscriptionJob, job_id: str, breach: Breach, now: float
) -> None:
    """Mark the tenant held until its window frees (logged by the worker that marks it)
    and give the job's admission place back."""
    reason = breach.reason(job.tenant)
    mark = wire.dumps({
        "tenant": job.tenant or NO_TENANT, "metric": breach.limit.metric,
        "limit": breach.limit.amount, "window_s": breach.limit.window_s, "used": breach.used,
        "frees_at": breach.frees_at, "reason": reason,
    })  # fmt: skip
    async with redis.pipeline(transaction=False) as pipe:
        # relative: the worker's clock decided the window (Redis's may differ a little)
        ttl_ms = max(1, math.ceil((breach.frees_at - now) * 1000))
        pipe.set(wire.tenant_held_key(job.tenant), mark, nx=True, px=ttl_ms)
        pipe.zrem(wire.admitted_key(job.model), job_id)
        pipe.zrem(wire.interactive_admitted_key(job.model, job.tenant), job_id)
        marked, _, _ = await pipe.execute()
    if marked:
        log.warning(
            "tenant.limited",
            tenant=job.tenant or NO_TENANT,
            metric=breach.limit.metric,
            used=breach.used,
            limit=breach.limit.amount,
            window_s=breach.limit.window_s,
            frees_at=breach.frees_at,
            frees_in_s=round(breach.frees_at - now, 3),
        )
