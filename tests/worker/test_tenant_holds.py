"""A tenant held at its limit takes no slots, tickets or admission places from the others.

The fleet runs on an injected clock (tests/worker/sched_sim.py) with the tenant gate in
front of the limiter, as the runner puts it, and each grant counted as one request.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.core.errors import CapacityDeferred, TenantLimitDeferred
from mimoq.core.jobs import parse_job
from mimoq.core.tenant_limits import TenantLimits, parse_tenant_limits
from mimoq.core.usage_windows import UsageEntry, record
from mimoq.worker import tenant_gate
from mimoq.worker.limiter import LimiterConfig, RedisLimiter
from mimoq.worker.limiter.admission import waiting_depth
from mimoq.worker.limiter.core import Lease
from tests.support.limiter_tickets import schedule
from tests.worker.sched_sim import Fleet, bulk, interactive

pytestmark = [pytest.mark.redis, pytest.mark.slow]
TTS, DESIGN = "mimo-v2.5-tts", "mimo-v2.5-tts-voicedesign"
CONFIG = LimiterConfig(account="acct", window_s=10.0, default_rpm=100, margin_s=0.1)
LIMIT = 20
RUN_S = 20.0


class GatedLimiter:
    """The gate in front of the limiter (as ``runner._attempt`` runs it), usage counted at
    each grant (the call ends at once here)."""

    def __init__(self, fleet: Fleet, inner: RedisLimiter, limits: TenantLimits) -> None:
        self.fleet, self.inner, self.limits = fleet, inner, limits
        self.held = 0

    async def acquire(self, model: str, *, job_id: str, lane: str, tenant: Any) -> Lease:
        job = parse_job({"kind": "speech", "input": "hi", "model": model, "tenant": tenant,
                         "priority": lane, "instructions": "calm"})  # fmt: skip
        try:
            await tenant_gate.check(
                self.fleet.redis, job, job_id, self.limits, limiters=[self.inner],
                clock=lambda: self.fleet.now,
            )  # fmt: skip
        except TenantLimitDeferred as exc:
            self.held += 1
            raise CapacityDeferred(exc.message, retry_after_s=exc.retry_after_s) from None
        lease = await self.inner.acquire(model, job_id=job_id, lane=lane, tenant=tenant)
        entry = UsageEntry(tenant, model, {"requests": 1})
        await record(self.fleet.redis, entry, self.limits.windows(), self.fleet.now)
        return lease

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def gated_fleet(redis: ArqRedis, limits: TenantLimits) -> tuple[Fleet, GatedLimiter]:
    fleet = Fleet(redis, replace(CONFIG, tenant_holds=limits.enabled))
    gate = GatedLimiter(fleet, fleet.limiter, limits)
    fleet.limiter = gate  # type: ignore[assignment]
    return fleet, gate


async def scenario(redis: ArqRedis, limits: TenantLimits) -> tuple[Fleet, GatedLimiter]:
    """Two models, both lanes, two tenants, for RUN_S seconds of the injected clock."""
    await redis.flushall()
    fleet, gate = gated_fleet(redis, limits)
    jobs = []
    for model in (TTS, DESIGN):
        jobs += [(f"a-{model}-{i}", bulk("alpha", model)) for i in range(150)]
        jobs += [(f"b-{model}-{i}", bulk("beta", model)) for i in range(300)]
    await fleet.enqueue_many(jobs)
    for i in range(30):
        fleet.arrive(fleet.now + 0.2 * i, f"ai-{i}", interactive("alpha"))
        fleet.arrive(fleet.now + 0.2 * i + 0.1, f"bi-{i}", interactive("beta"))
    await fleet.run_for(RUN_S)
    return fleet, gate


async def test_a_held_tenant_leaves_every_slot_to_the_others(redis: ArqRedis) -> None:
    free, _ = await scenario(redis, TenantLimits())
    fleet, gate = await scenario(redis, parse_tenant_limits(f"alpha:requests={LIMIT}/1d"))
    alpha = [g for g in fleet.grants if g.tenant == "alpha"]
    beta = [g for g in fleet.grants if g.tenant == "beta"]
    # alpha's calls stop at its limit (usage is counted at each grant here: no overshoot)
    assert len(alpha) == LIMIT
    # and beta takes the slots alpha leaves: as many calls in all as with no limit. The
    # tickets alpha held when it reached its limit (its look-ahead, about 5 per model, and
    # its interactive tickets) go back as its jobs reach the gate, each slot to the
    # schedule's last ticket (14 slots were lost per hit before that).
    lost = len(free.grants) - len(fleet.grants)
    assert lost <= 1, (len(fleet.grants), len(free.grants))
    assert {g.lane for g in beta} == {"bulk", "interactive"}
    assert {g.model for g in beta} == {TTS, DESIGN}
    # alpha takes no new ticket once held and gave back those it had, and its backlog
    # stays in its waiting lists, not in the queue
    for model in (TTS, DESIGN):
        slots = await schedule(redis, CONFIG.account, model)
        assert sum(job.decode().startswith(("a-", "ai-")) for job, _ in slots) == 0
        assert (await waiting_depth(redis, model))["alpha"] >= 150 - LIMIT - 10
    assert await redis.zcard(wire.interactive_admitted_key(TTS, "alpha")) == 0
    # the few of alpha's jobs admitted before the hold wait in the queue for their window
    assert 0 < gate.held <= 2 * (wire.INTERACTIVE_DIRECT + 10)
