"""A result record's callback state, rewritten by ``result_callback_swap.lua`` on a real
redis-server: set only over the text it was made from, its TTL and the rest of the record
kept, read again when the record changed, never recreated once gone."""

from __future__ import annotations

import json

import pytest
from arq.connections import ArqRedis

from mimoq.core import scripts, wire
from mimoq.core.jobs import CallbackState, CallbackStatus
from mimoq.worker.callback_delivery import _update_state
from tests.support.commandstats import command_calls

pytestmark = pytest.mark.redis

JOB = "swap-job"
DELIVERED = CallbackState(status=CallbackStatus.delivered, delivery_id="cb-swap-job", attempts=1)


def _record(**extra: object) -> str:
    pending = {"status": "pending", "delivery_id": "cb-swap-job"}
    return wire.dumps({"id": JOB, "status": "succeeded", "callback": pending, **extra})


async def test_the_finishs_own_text_sets_the_state_in_one_call(own_pool: ArqRedis) -> None:
    written = _record(output={"text": "héllo"})
    await own_pool.set(wire.result_key(JOB), written, ex=3600)
    await own_pool.script_load(scripts.named("result_callback_swap").text)  # as after a first use
    await own_pool.config_resetstat()
    assert await _update_state(own_pool, JOB, DELIVERED, record=written)
    calls = await command_calls(own_pool)
    assert dict(calls) == {"evalsha": 1, "get": 1, "set": 1}  # the GET and SET inside it
    raw = await own_pool.get(wire.result_key(JOB))
    assert raw is not None
    stored = json.loads(raw)
    assert stored["callback"] == DELIVERED.model_dump(mode="json")
    assert stored["output"] == {"text": "héllo"} and stored["status"] == "succeeded"
    assert 3500 < await own_pool.ttl(wire.result_key(JOB)) <= 3600


async def test_a_record_changed_since_is_read_again_and_keeps_the_change(
    own_pool: ArqRedis,
) -> None:
    await own_pool.set(wire.result_key(JOB), _record(note="changed meanwhile"), ex=3600)
    assert await _update_state(own_pool, JOB, DELIVERED, record=_record())
    raw = await own_pool.get(wire.result_key(JOB))
    assert raw is not None
    stored = json.loads(raw)
    assert stored["note"] == "changed meanwhile"
    assert stored["callback"]["status"] == "delivered"
    # and without a text at all, it reads the record first
    later = CallbackState(status=CallbackStatus.delivered, delivery_id="cb-swap-job", attempts=2)
    assert await _update_state(own_pool, JOB, later)
    raw = await own_pool.get(wire.result_key(JOB))
    assert raw is not None and json.loads(raw)["callback"]["attempts"] == 2


async def test_a_record_gone_is_not_recreated(own_pool: ArqRedis) -> None:
    assert not await _update_state(own_pool, JOB, DELIVERED, record=_record())
    assert not await _update_state(own_pool, JOB, DELIVERED)
    assert await own_pool.exists(wire.result_key(JOB)) == 0
