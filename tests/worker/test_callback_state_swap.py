"""A result record's callback state, rewritten by ``result_callback_swap.lua`` on a real
redis-server: set only over the text it was made from, its TTL and the rest of the record
kept, read again when the record changed, never recreated once gone."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from mimoq.core import scripts, wire
from mimoq.core.jobs import CallbackState, CallbackStatus
from mimoq.worker.callback_delivery import _update_state
from tests.conftest import RedisServer
from tests.support.commandstats import command_calls

pytestmark = pytest.mark.redis

JOB = "swap-job"
DELIVERED = CallbackState(status=CallbackStatus.delivered, delivery_id="cb-swap-job", attempts=1)


def _record(**extra: object) -> str:
    pending = {"status": "pending", "delivery_id": "cb-swap-job"}
    return wire.dumps({"id": JOB, "status": "succeeded", "callback": pending, **extra})


@pytest.fixture
async def client(own_redis: RedisServer) -> AsyncIterator[Redis]:
    redis = Redis.from_url(own_redis.url)
    try:
        yield redis
    finally:
        await redis.aclose()


async def test_the_finishs_own_text_sets_the_state_in_one_call(client: Redis) -> None:
    written = _record(output={"text": "héllo"})
    await client.set(wire.result_key(JOB), written, ex=3600)
    await client.script_load(scripts.named("result_callback_swap").text)  # as after a first use
    await client.config_resetstat()
    assert await _update_state(client, JOB, DELIVERED, record=written)
    calls = await command_calls(client)
    assert dict(calls) == {"evalsha": 1, "get": 1, "set": 1}  # the GET and SET inside it
    raw = await client.get(wire.result_key(JOB))
    assert raw is not None
    stored = json.loads(raw)
    assert stored["callback"] == DELIVERED.model_dump(mode="json")
    assert stored["output"] == {"text": "héllo"} and stored["status"] == "succeeded"
    assert 3500 < await client.ttl(wire.result_key(JOB)) <= 3600


async def test_a_record_changed_since_is_read_again_and_keeps_the_change(client: Redis) -> None:
    await client.set(wire.result_key(JOB), _record(note="changed meanwhile"), ex=3600)
    assert await _update_state(client, JOB, DELIVERED, record=_record())
    raw = await client.get(wire.result_key(JOB))
    assert raw is not None
    stored = json.loads(raw)
    assert stored["note"] == "changed meanwhile"
    assert stored["callback"]["status"] == "delivered"
    # and without a text at all, it reads the record first
    later = CallbackState(status=CallbackStatus.delivered, delivery_id="cb-swap-job", attempts=2)
    assert await _update_state(client, JOB, later)
    raw = await client.get(wire.result_key(JOB))
    assert raw is not None and json.loads(raw)["callback"]["attempts"] == 2


async def test_a_record_gone_is_not_recreated(client: Redis) -> None:
    assert not await _update_state(client, JOB, DELIVERED, record=_record())
    assert not await _update_state(client, JOB, DELIVERED)
    assert await client.exists(wire.result_key(JOB)) == 0
