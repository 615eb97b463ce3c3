"""`mimoq:failures` (recent failures for `mimoq inspect`) expires like the results it
summarizes: every key mimoq writes has a TTL (issue 19, item 7)."""

from __future__ import annotations

import pytest
from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.core.settings import Settings
from mimoq.producer.client import Producer
from tests.e2e.conftest import running_worker

pytestmark = [pytest.mark.redis]


async def test_the_recent_failures_list_expires_with_the_results(
    redis: ArqRedis, settings: Settings
) -> None:
    settings = settings.updated(storage={"result_ttl_s": 600})
    producer = Producer(redis, settings)
    script = redis.register_script(wire.enqueue_script())
    # Refused by the worker (speed must be 1): a final failure, pushed onto the list.
    await script(keys=wire.enqueue_keys("fails-1"),
                 args=["fails-1", '{"kind": "speech", "input": "Hi.", "speed": 3}'])  # fmt: skip
    async with running_worker(settings):
        result = await producer.wait("fails-1", timeout_s=30)
    assert result.status == "failed"
    assert await redis.llen(wire.RECENT_FAILURES_KEY) == 1
    assert 0 < await redis.ttl(wire.RECENT_FAILURES_KEY) <= 600
