"""A cancel gives a deferred job's limiter ticket back at once (docs/cancel.md): the slot
it held goes to the next waiting job, not a slot later. Real Redis, the real acquire and
cancel scripts, an injected limiter clock."""

from __future__ import annotations

import json

import pytest
from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.core.acl_users import users
from mimoq.core.dialect_constants import TTS_MODEL
from mimoq.core.errors import CapacityDeferred
from mimoq.core.settings import Settings
from mimoq.producer.cancel import CancelStatus, cancel_jobs
from mimoq.worker.limiter import RedisLimiter
from mimoq.worker.limiter.config import KEY_PARTS, LimiterConfig, limiter_keys
from tests.conftest import start_redis_server
from tests.support.limiter_tickets import schedule, slot_of
from tests.worker.test_limiter import T0, Clock

pytestmark = pytest.mark.redis
#: One-second slots, no in-process hold: each job is told to come back at its slot itself.
SLOTS = LimiterConfig(account="acct", window_s=10.0, default_rpm=10, target=1.0, hold_s=0.0)
KEYS = dict(zip(KEY_PARTS, limiter_keys("acct", TTS_MODEL), strict=True))


async def deferred(limiter: RedisLimiter, redis: ArqRedis, job_id: str, tenant: str) -> float:
    """Ask for a slot as a worker would, and defer the job in arq's queue as arq would:
    the seconds until it comes back."""
    envelope = {"t": 1, "f": "speech", "a": [], "et": 1,
                "k": {"job": {"kind": "speech", "model": TTS_MODEL, "tenant": tenant}}}  # fmt: skip
    await redis.set(wire.job_key(job_id), json.dumps(envelope), ex=600)
    with pytest.raises(CapacityDeferred) as deferral:
        await limiter.acquire(TTS_MODEL, job_id=job_id, tenant=tenant)
    wait = deferral.value.retry_after_s
    assert wait is not None
    await redis.zadd(wire.QUEUE_NAME, {job_id: round((T0 + wait) * 1000)})
    return wait


async def test_the_next_waiting_job_is_granted_the_cancelled_jobs_slot(
    redis: ArqRedis,
) -> None:
    clock = Clock()
    limiter = RedisLimiter(SLOTS, redis, clock=clock)
    await limiter.acquire(TTS_MODEL, job_id="first")  # slot T0
    assert await deferred(limiter, redis, "gone", "acme") == 1.0  # slot T0 + 1
    assert await deferred(limiter, redis, "next", "bolt") == 2.0  # slot T0 + 2
    before = await redis.zscore(wire.QUEUE_NAME, "next")

    [answer] = await cancel_jobs(redis, ["gone"], settings=Settings())
    assert answer.status is CancelStatus.cancelled and not answer.in_flight

    # the ticket and acme's count are gone; "next" holds the freed slot, and arq brings it
    # back a slot sooner
    assert await slot_of(redis, "acct", TTS_MODEL, "gone") is None
    assert await slot_of(redis, "acct", TTS_MODEL, "next") == T0 + 1
    counts = await redis.hgetall(KEYS["tenant_tickets"])  # type: ignore[misc]
    assert b"interactive:acme" not in counts and counts[b"interactive:bolt"] == b"1"
    assert await redis.zscore(wire.QUEUE_NAME, "next") == before - 1000
    clock.now = T0 + 1
    lease = await limiter.acquire(TTS_MODEL, job_id="next", tenant="bolt")
    assert lease.granted_at == T0 + 1  # the cancelled job's slot, not a slot later
    # the schedule ends where "next" was: a newcomer gets T0 + 2
    assert await deferred(limiter, redis, "later", "acme") == 1.0


async def test_the_last_tickets_slot_goes_to_the_next_newcomer(redis: ArqRedis) -> None:
    clock = Clock()
    limiter = RedisLimiter(SLOTS, redis, clock=clock)
    await limiter.acquire(TTS_MODEL, job_id="first")
    assert await deferred(limiter, redis, "gone", "acme") == 1.0
    await cancel_jobs(redis, ["gone"], settings=Settings())
    assert not await schedule(redis, "acct", TTS_MODEL)
    assert await deferred(limiter, redis, "newcomer", "bolt") == 1.0  # T0 + 1, not T0 + 2


async def test_without_the_cancel_the_next_job_waits_its_own_slot(redis: ArqRedis) -> None:
    """The contrast: what the two tests above change."""
    clock = Clock()
    limiter = RedisLimiter(SLOTS, redis, clock=clock)
    await limiter.acquire(TTS_MODEL, job_id="first")
    await deferred(limiter, redis, "kept", "acme")
    await deferred(limiter, redis, "next", "bolt")
    clock.now = T0 + 1
    with pytest.raises(CapacityDeferred) as deferral:
        await limiter.acquire(TTS_MODEL, job_id="next", tenant="bolt")
    assert deferral.value.retry_after_s == 1.0


async def test_a_least_privilege_producer_cancels_without_touching_the_ticket() -> None:
    """Its Redis user may not write limiter keys: the cancel still holds (the job goes to
    the queue's head for a worker to record), and the ticket is left for the limiter."""
    server = start_redis_server()
    admin = ArqRedis.from_url(server.url)
    producer_user = users()[0]
    try:
        await admin.execute_command(
            "ACL", "SETUSER", producer_user.name, *producer_user.rules, ">pw-1a2b"
        )
        limiter = RedisLimiter(SLOTS, admin, clock=Clock())
        await limiter.acquire(TTS_MODEL, job_id="first")
        await deferred(limiter, admin, "held", "acme")
        limited = ArqRedis.from_url(
            f"redis://{producer_user.name}:pw-1a2b@127.0.0.1:{server.port}/0"
        )
        try:
            [answer] = await cancel_jobs(limited, ["held"], settings=Settings())
        finally:
            await limited.aclose()
        assert answer.status is CancelStatus.cancelled
        assert await admin.get(wire.cancel_key("held")) == b"cancelled"
        assert await admin.zscore(wire.QUEUE_NAME, "held") == 1  # a worker records it
        assert await slot_of(admin, "acct", TTS_MODEL, "held") == T0 + 1
    finally:
        await admin.aclose()
        server.stop()
