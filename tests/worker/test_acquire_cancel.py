"""A cancel is seen by every decision of the limiter's acquire, and read where the decision
writes the job's marker (core/scripts/limiter_acquire.lua; issue #22): the grant's SET and a
ticket's replace the marker with GET, and put a "cancelled" they replaced back. So a job is
granted before its cancel or never, whichever way its ask goes, and a grant or a ticket
costs no read of the marker of its own. Real Redis, the real scripts, an injected clock."""

from __future__ import annotations

import pytest
from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.core.dialect_constants import TTS_MODEL
from mimoq.core.errors import CapacityDeferred, JobCancelled
from mimoq.worker.limiter import RedisLimiter
from tests.support.commandstats import command_calls
from tests.support.limiter_tickets import slot_of
from tests.worker.test_admit_slots import _keys
from tests.worker.test_limiter import SECONDS, T0, Clock

pytestmark = pytest.mark.redis

DAY_S = 86400


async def _busy(redis: ArqRedis) -> tuple[RedisLimiter, Clock]:
    """One-second slots, the first granted at T0: the next job asking at T0 queues for T0 + 1."""
    clock = Clock()
    limiter = RedisLimiter(SECONDS, redis, clock=clock, sleep=clock.sleep)
    await limiter.acquire(TTS_MODEL, job_id="busy", lane="bulk", tenant="acme")
    return limiter, clock


async def _cancel(redis: ArqRedis, job_id: str) -> None:
    """What cancel.lua leaves for a job a worker holds: the marker, for days."""
    await redis.set(wire.cancel_key(job_id), "cancelled", px=2 * DAY_S * 1000)


async def _assert_refused(redis: ArqRedis, job_id: str) -> None:
    """Its marker still says cancelled, for as long as a cancel keeps it; it holds no slot
    and no count; only "busy" was granted."""
    assert await redis.get(wire.cancel_key(job_id)) == b"cancelled"
    assert await redis.pttl(wire.cancel_key(job_id)) > DAY_S * 1000
    assert await slot_of(redis, "acct", TTS_MODEL, job_id) is None
    keys = _keys(TTS_MODEL)
    assert not await redis.hexists(keys["ticket_tenant"], job_id)  # type: ignore[misc]
    counts = await redis.hgetall(keys["tenant_tickets"])  # type: ignore[misc]
    assert int(counts.get(b"bulk:acme", 0)) == 0
    assert await redis.zcard(keys["log"]) == 1  # (by lease id)


async def test_a_cancelled_job_at_a_free_slot_is_refused_not_granted(redis: ArqRedis) -> None:
    clock = Clock()
    limiter = RedisLimiter(SECONDS, redis, clock=clock, sleep=clock.sleep)
    await _cancel(redis, "gone")
    with pytest.raises(JobCancelled):
        await limiter.acquire(TTS_MODEL, job_id="gone", lane="bulk", tenant="acme")
    assert await redis.get(wire.cancel_key("gone")) == b"cancelled"
    assert await redis.pttl(wire.cancel_key("gone")) > DAY_S * 1000
    assert await redis.zcard(_keys(TTS_MODEL)["log"]) == 0


async def test_a_cancelled_job_that_would_queue_takes_no_ticket(redis: ArqRedis) -> None:
    limiter, _ = await _busy(redis)
    await redis.zadd(wire.QUEUE_NAME, {"gone": T0 * 1000})
    await _cancel(redis, "gone")
    with pytest.raises(JobCancelled):
        await limiter.acquire(TTS_MODEL, job_id="gone", lane="bulk", tenant="acme")
    await _assert_refused(redis, "gone")


@pytest.mark.parametrize("back_at", [T0 + 0.5, T0 + 1], ids=["early", "at_its_slot"])
async def test_a_ticket_holder_cancelled_meanwhile_gives_its_slot_back(
    redis: ArqRedis, back_at: float
) -> None:
    """Early, its decision writes no marker and reads it; at its slot, the grant's SET reads
    it: either way the ticket goes."""
    limiter, clock = await _busy(redis)
    await redis.zadd(wire.QUEUE_NAME, {"held": T0 * 1000})
    with pytest.raises(CapacityDeferred):
        await limiter.acquire(TTS_MODEL, job_id="held", lane="bulk", tenant="acme")
    assert await slot_of(redis, "acct", TTS_MODEL, "held") == T0 + 1
    await _cancel(redis, "held")
    clock.now = back_at
    with pytest.raises(JobCancelled):
        await limiter.acquire(TTS_MODEL, job_id="held", lane="bulk", tenant="acme")
    await _assert_refused(redis, "held")


async def test_a_grant_and_a_ticket_read_no_marker_of_their_own(redis: ArqRedis) -> None:
    """Their SETs read it (GET): a GET first on every ask cost a command each."""
    limiter, clock = await _busy(redis)
    await redis.zadd(wire.QUEUE_NAME, {"next": T0 * 1000})
    await redis.config_resetstat()
    with pytest.raises(CapacityDeferred):
        await limiter.acquire(TTS_MODEL, job_id="next", lane="bulk", tenant="acme")
    assert (await command_calls(redis))["get"] == 0
    clock.now = T0 + 1
    await redis.config_resetstat()
    lease = await limiter.acquire(TTS_MODEL, job_id="next", lane="bulk", tenant="acme")
    assert lease.granted_at == T0 + 1
    assert (await command_calls(redis))["get"] == 0
    assert await redis.get(wire.cancel_key("next")) == b"granted"
