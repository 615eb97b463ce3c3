"""The paused accounts a worker keeps from the channel (worker/accounts/paused_view.py), on a
real redis-server of the test's own: no read per call while subscribed, every change seen,
Redis asked again whenever the copy cannot be trusted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from arq.connections import ArqRedis
from redis.asyncio import Redis

from mimoq.core import wire
from mimoq.core.errors import PaymentRequiredError
from mimoq.worker.accounts.breaker import Breaker, resume_by_hand
from mimoq.worker.accounts.paused_view import PausedView
from tests.support.commandstats import command_calls
from tests.support.polling import eventually

pytestmark = pytest.mark.redis


def _breaker(redis: Redis) -> Breaker:
    return Breaker(redis, probe_base_s=30, probe_max_s=300, pause_max_s=3600, trip_429s=5)


@pytest.fixture
async def watched(own_pool: ArqRedis) -> AsyncIterator[Breaker]:
    """A breaker whose view is subscribed and has read the set once."""
    breaker = _breaker(own_pool)
    watcher = asyncio.create_task(breaker.paused_view.watch())
    await eventually(lambda: breaker.paused_view.known() is not None, what="the first read")
    try:
        yield breaker
    finally:
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher


async def _smembers(redis: Redis) -> int:
    return (await command_calls(redis)).get("smembers", 0)


async def test_without_a_subscription_every_read_asks_redis(own_pool: ArqRedis) -> None:
    view = PausedView(own_pool)
    await own_pool.sadd(wire.ACCOUNTS_PAUSED_KEY, "a1")  # type: ignore[misc]
    await own_pool.config_resetstat()
    assert [await view.read() for _ in range(3)] == [frozenset({"a1"})] * 3
    assert view.known() is None
    assert await _smembers(own_pool) == 3
    # a heartbeat's refresh reads too, and keeps nothing while unsubscribed
    assert await view.refresh() == frozenset({"a1"})
    assert view.known() is None


async def test_subscribed_calls_read_no_redis_and_see_each_trip_and_resume(
    own_pool: ArqRedis, watched: Breaker
) -> None:
    assert watched.paused_view.known() == frozenset()
    await own_pool.config_resetstat()
    for _ in range(50):
        assert await watched.paused() == frozenset()
    assert await _smembers(own_pool) == 0

    # another worker's breaker trips the account: its script publishes the change
    other = _breaker(own_pool)
    assert await other.trip("acct-1", PaymentRequiredError("out of funds", status=402))
    await eventually(lambda: watched.paused_view.known() == {"acct-1"}, what="the trip")
    assert await watched.paused() == {"acct-1"}

    # a second trip of the same account changes nothing and publishes nothing
    assert not await other.trip("acct-1", PaymentRequiredError("again", status=402))
    assert await other.trip("acct-2", PaymentRequiredError("out of funds", status=402))
    await eventually(lambda: watched.paused_view.known() == {"acct-1", "acct-2"}, what="trip 2")

    # a probe's success resumes one; an operator's `mimoq accounts resume` the other
    assert await other.resume("acct-1")
    await eventually(lambda: watched.paused_view.known() == {"acct-2"}, what="the resume")
    assert await resume_by_hand(own_pool, "acct-2")
    await eventually(lambda: watched.paused_view.known() == frozenset(), what="by hand")


async def test_a_damaged_record_the_gate_drops_is_published(
    own_pool: ArqRedis, watched: Breaker
) -> None:
    other = _breaker(own_pool)
    await other.trip("acct-d", PaymentRequiredError("out of funds", status=402))
    await eventually(lambda: watched.paused_view.known() == {"acct-d"}, what="the trip")
    await own_pool.hdel(wire.account_key("acct-d"), "interval")  # type: ignore[misc]
    assert (await other.gate("acct-d")).verdict.value == "open"
    await eventually(lambda: watched.paused_view.known() == frozenset(), what="the drop")


async def test_a_change_without_a_message_is_caught_by_the_heartbeats_refresh(
    own_pool: ArqRedis, watched: Breaker
) -> None:
    # an older mimoq, or a hand edit: the set changes and nobody publishes
    await own_pool.sadd(wire.ACCOUNTS_PAUSED_KEY, "silent")  # type: ignore[misc]
    assert watched.paused_view.known() == frozenset()
    assert await watched.paused_view.refresh() == {"silent"}
    assert watched.paused_view.known() == {"silent"}
    assert await watched.paused() == {"silent"}


async def test_a_lost_subscription_sends_reads_to_redis_until_it_is_back(
    own_pool: ArqRedis, watched: Breaker
) -> None:
    view = watched.paused_view
    # the change lands while the subscription is down: it must not be missed
    await own_pool.client_kill_filter(_type="pubsub")
    await eventually(lambda: view.known() is None, what="the copy dropped")
    await own_pool.sadd(wire.ACCOUNTS_PAUSED_KEY, "while-down")  # type: ignore[misc]
    assert await view.read() == {"while-down"}
    await eventually(lambda: view.known() == {"while-down"}, what="the subscription back")
