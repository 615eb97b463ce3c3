"""``Producer.wait`` is woken by the finish path's message, not by polling; a missed message
is covered by the fallback read; pub/sub refused (an old ACL) still works, by polling."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from arq.connections import ArqRedis
from redis.exceptions import ConnectionError as RedisConnectionError

from mimoq.core import wire
from mimoq.core.acl_users import users
from mimoq.core.jobs import JobResult
from mimoq.core.results import write_result_safely
from mimoq.core.settings import Settings
from mimoq.producer import result_watch
from mimoq.producer.client import Producer
from tests.conftest import RedisServer
from tests.support.polling import eventually

#: Far longer than any test's deadline: a wait that returns was woken, not polled.
NEVER_S = 600.0


def finished(job_id: str) -> JobResult:
    return JobResult(id=job_id, kind="speech", status="succeeded", finished_at=time.time())


async def subscribers(redis: ArqRedis, job_id: str) -> int:
    counts = await redis.pubsub_numsub(wire.done_channel(job_id))
    return int(counts[0][1])


async def get_calls(redis: ArqRedis) -> int:
    stats: dict[str, Any] = await redis.info("commandstats")
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


async def test_wait_returns_when_the_finish_path_writes_the_result(backend: ArqRedis) -> None:
    producer = Producer(backend, Settings())
    waiting = asyncio.create_task(producer.wait("job-1", timeout_s=120, fallback_s=NEVER_S))
    await eventually(lambda: subscribers(backend, "job-1"), what="the wait to subscribe")
    await write_result_safely(backend, finished("job-1"), ttl_s=60)
    result = await asyncio.wait_for(waiting, 60)  # fallback NEVER_S: only a message wakes it
    assert result.id == "job-1" and result.status == "succeeded"
    assert await subscribers(backend, "job-1") == 0  # unsubscribed once done


@pytest.mark.redis
async def test_a_wait_reads_the_record_twice_however_long_the_job_runs(
    redis: ArqRedis,
) -> None:
    producer = Producer(redis, Settings())
    before = await get_calls(redis)
    waiting = asyncio.create_task(producer.wait("long", timeout_s=120, fallback_s=NEVER_S))
    await eventually(lambda: subscribers(redis, "long"), what="the wait to subscribe")
    # The job "runs" while other commands come and go; the wait reads nothing meanwhile.
    for _ in range(50):
        await redis.ping()
        await asyncio.sleep(0.01)
    assert await get_calls(redis) - before == 1  # the read after subscribing
    await write_result_safely(redis, finished("long"), ttl_s=60)
    await asyncio.wait_for(waiting, 60)
    assert await get_calls(redis) - before == 2  # and the read after the message


async def test_a_missed_message_is_covered_by_the_fallback_read(backend: ArqRedis) -> None:
    producer = Producer(backend, Settings())
    waiting = asyncio.create_task(producer.wait("quiet", timeout_s=120, fallback_s=0.2))
    await eventually(lambda: subscribers(backend, "quiet"), what="the wait to subscribe")
    # Written without the message (as if it were lost): only the fallback read finds it.
    await backend.set(wire.result_key("quiet"), wire.dumps(finished("quiet").model_dump()))
    assert (await asyncio.wait_for(waiting, 60)).id == "quiet"


async def test_a_finished_job_is_answered_at_once(backend: ArqRedis) -> None:
    await write_result_safely(backend, finished("done"), ttl_s=60)
    producer = Producer(backend, Settings())
    assert (await asyncio.wait_for(producer.wait("done", fallback_s=NEVER_S), 60)).id == "done"


async def test_a_timed_out_wait_leaves_no_subscription(backend: ArqRedis) -> None:
    producer = Producer(backend, Settings())
    with pytest.raises(TimeoutError, match=r"no result after 0\.2 s"):
        await producer.wait("never", timeout_s=0.2, fallback_s=NEVER_S)
    assert await subscribers(backend, "never") == 0
    await producer.aclose()


@pytest.mark.redis
async def test_many_waits_share_one_connection_and_release_it(redis: ArqRedis) -> None:
    producer = Producer(redis, Settings())
    ids = [f"many-{i}" for i in range(20)]
    waits = [asyncio.create_task(producer.wait(i, timeout_s=120, fallback_s=NEVER_S)) for i in ids]

    async def all_subscribed() -> bool:
        return all([await subscribers(redis, i) == 1 for i in ids])

    await eventually(all_subscribed, what="every wait to subscribe")
    clients = await redis.client_list()
    assert sum(1 for c in clients if int(c.get("sub", 0)) > 0) == 1
    for job_id in ids[:10]:
        await write_result_safely(redis, finished(job_id), ttl_s=60)
    assert [r.id for r in await asyncio.wait_for(asyncio.gather(*waits[:10]), 60)] == ids[:10]
    assert not any(w.done() for w in waits[10:])
    assert all([await subscribers(redis, i) == 1 for i in ids[10:]])  # the rest still listen
    for job_id in ids[10:]:
        await write_result_safely(redis, finished(job_id), ttl_s=60)
    await asyncio.wait_for(asyncio.gather(*waits[10:]), 60)
    clients = await redis.client_list()
    assert not any(int(c.get("sub", 0)) > 0 for c in clients)  # the last wait closed it


@pytest.mark.redis
async def test_without_pubsub_rights_waits_poll_and_finishing_still_works(
    redis: ArqRedis, redis_server: RedisServer
) -> None:
    # A user of an ACL written before the channel existed: no channels at all.
    await redis.execute_command(
        "ACL", "SETUSER", "nochannels", "on", ">pw-nochannels", "resetchannels", "~*", "+@all"
    )
    limited = ArqRedis.from_url(f"redis://nochannels:pw-nochannels@127.0.0.1:{redis_server.port}/0")
    try:
        producer = Producer(limited, Settings())
        before = await get_calls(redis)
        waiting = asyncio.create_task(producer.wait("acl", timeout_s=120, fallback_s=NEVER_S))
        await eventually(lambda: _more(redis, before, 3), what="the wait to poll")
        # The worker side under the same rights: the record is written, the message refused.
        await write_result_safely(limited, finished("acl"), ttl_s=60)
        assert (await asyncio.wait_for(waiting, 60)).id == "acl"
    finally:
        await limited.aclose()
        await redis.execute_command("ACL", "DELUSER", "nochannels")


async def _more(redis: ArqRedis, before: int, reads: int) -> bool:
    return await get_calls(redis) - before >= reads


@pytest.mark.redis
async def test_the_acl_users_may_announce_and_hear_results(
    redis: ArqRedis, redis_server: RedisServer
) -> None:
    producer_user, worker_user = users("notify-")
    for user in (producer_user, worker_user):
        await redis.execute_command("ACL", "SETUSER", user.name, *user.rules, ">pw-" + user.name)
    url = f"redis://{{}}:pw-{{}}@127.0.0.1:{redis_server.port}/0"
    as_producer = ArqRedis.from_url(url.format(producer_user.name, producer_user.name))
    as_worker = ArqRedis.from_url(url.format(worker_user.name, worker_user.name))
    try:
        producer = Producer(as_producer, Settings())
        waiting = asyncio.create_task(producer.wait("acl-ok", timeout_s=120, fallback_s=NEVER_S))
        await eventually(lambda: subscribers(redis, "acl-ok"), what="the wait to subscribe")
        await write_result_safely(as_worker, finished("acl-ok"), ttl_s=60)
        assert (await asyncio.wait_for(waiting, 60)).id == "acl-ok"
    finally:
        await as_producer.aclose()
        await as_worker.aclose()
        for user in (producer_user, worker_user):
            await redis.execute_command("ACL", "DELUSER", user.name)


class _RefusingPubSub:
    """A pub/sub connection whose first subscribe fails once ``gate`` opens."""

    def __init__(self) -> None:
        self.entered, self.gate = asyncio.Event(), asyncio.Event()

    async def subscribe(self, *channels: str) -> None:
        self.entered.set()
        await self.gate.wait()
        raise RedisConnectionError("connection refused")

    async def unsubscribe(self, *channels: str) -> None:
        pass

    async def aclose(self) -> None:
        pass


async def test_a_failed_subscribe_releases_every_wait_on_its_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A second wait on the same job waits for the first one's subscription: when that
    # fails, it polls at once instead of waiting out the confirmation (never, here).
    monkeypatch.setattr(result_watch, "CONFIRM_S", NEVER_S)
    pubsub = _RefusingPubSub()

    class _Redis:
        def pubsub(self) -> _RefusingPubSub:
            return pubsub

    watch = result_watch.ResultWatch(_Redis())  # type: ignore[arg-type]

    async def wait_on_job() -> asyncio.Event | None:
        async with watch.watching("job-x") as event:
            return event

    first = asyncio.create_task(wait_on_job())
    await pubsub.entered.wait()  # the first wait is subscribing
    second = asyncio.create_task(wait_on_job())
    await eventually(
        lambda: len(watch._waiters.get(wire.done_channel("job-x"), ())) == 2,
        what="the second wait",
    )
    pubsub.gate.set()
    assert await asyncio.wait_for(first, 60) is None  # told to poll
    assert await asyncio.wait_for(second, 30) is None


async def test_a_wait_cancelled_while_its_connection_closes_stays_cancelled(
    backend: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C (a cancel) landing while a finished wait closes the shared connection is not
    swallowed: `mimoq batch` lost it that way and ran on to the end. The close still ends."""
    entered, gate = asyncio.Event(), asyncio.Event()
    real_close = result_watch._close

    async def slow_close(*args: Any) -> None:
        entered.set()
        await gate.wait()
        await real_close(*args)

    monkeypatch.setattr(result_watch, "_close", slow_close)
    producer = Producer(backend, Settings())
    task = asyncio.create_task(producer.wait("never", timeout_s=0.2, fallback_s=NEVER_S))
    await asyncio.wait_for(entered.wait(), 30)
    task.cancel()
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    await producer.aclose()
    assert await subscribers(backend, "never") == 0


async def test_a_wait_cancelled_as_its_message_arrives_stays_cancelled(
    backend: ArqRedis,
) -> None:
    """The wake-up and a cancel (a Ctrl-C) in the same instant: the cancel wins. With
    asyncio.wait_for on Python 3.11 the wait went on, and `mimoq batch` ran to the end."""
    producer = Producer(backend, Settings())
    task = asyncio.create_task(producer.wait("j", timeout_s=NEVER_S, fallback_s=NEVER_S))
    channel = wire.done_channel("j")
    await eventually(lambda: _awaiting_message(producer, channel), what="the wait to wait")
    [woken] = producer._watch._waiters[channel]
    woken.set()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=10)
    assert task in done and task.cancelled()
    await producer.aclose()


async def _awaiting_message(producer: Producer, channel: str) -> bool:
    """The wait is parked on its event (asyncio.Event keeps its waiters' futures)."""
    return any(event._waiters for event in producer._watch._waiters.get(channel, ()))  # type: ignore[attr-defined]
