"""An ended delivery keeps its history and drops its body (issue 19, item 8): what it sent is
still shown (rebuilt from the result record), replays still send the same bytes, also once
the result record has expired, and an ended delivery's job run again sends nothing."""

from __future__ import annotations

import asyncio
import json

import pytest
from arq.connections import ArqRedis

from mimoq.core import arq_compat, deadletters, deliveries, wire
from mimoq.core.deadletters import DeadLetterReason
from mimoq.core.jobs import CallbackStatus
from mimoq.core.webhooks import Delivery
from mimoq.worker import callback_delivery
from tests.callbacks.conftest import make_settings, read_state, run_worker, schedule
from tests.callbacks.test_cli import lines, mimoq
from tests.conftest import RedisServer
from tests.support.receiver import Receiver, Response

pytestmark = pytest.mark.redis


async def _stored(redis: ArqRedis, delivery_id: str) -> dict[str, object]:
    raw = await redis.get(deliveries.key(delivery_id))
    assert raw is not None
    record: dict[str, object] = json.loads(raw)
    return record


async def _show(redis_server: RedisServer, capsys: pytest.CaptureFixture[str], delivery_id: str):  # type: ignore[no-untyped-def]
    capsys.readouterr()  # the worker's log lines, not the CLI's output
    assert await asyncio.to_thread(mimoq, ["callbacks", "show", delivery_id], redis_server) == 0
    [shown] = lines(capsys.readouterr().out)
    return shown


async def test_a_delivered_record_keeps_its_history_and_drops_its_body(
    redis: ArqRedis,
    redis_server: RedisServer,
    receiver: Receiver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    receiver.respond(Response(500), Response(200))
    delivery_id = await schedule(redis, receiver)
    pending = await _stored(redis, delivery_id)
    assert isinstance(pending["body"], str)  # while it is being delivered, the body is there

    await run_worker(redis_server, make_settings())

    sent = receiver.wait_for(2)
    assert sent[0].body == sent[1].body
    record = await _stored(redis, delivery_id)
    assert "body" not in record
    assert [a["outcome"] for a in record["history"]] == ["retry", "delivered"]  # type: ignore[union-attr]

    # `callbacks show` still prints what was sent: the same bytes, rebuilt from the result.
    shown = await _show(redis_server, capsys, delivery_id)
    assert shown["body"] == sent[1].body.decode() and shown["body_rebuilt"] is True
    assert [a["outcome"] for a in shown["history"]] == ["retry", "delivered"]

    # Once the result record has expired too, the history stays and the body is gone.
    await redis.delete(wire.result_key("job-1"))
    shown = await _show(redis_server, capsys, delivery_id)
    assert shown["body"] is None and "expired" in shown["body_note"]
    assert len(shown["history"]) == 2


async def test_a_dead_letter_keeps_the_body_and_replays_it_after_the_result_expired(
    redis: ArqRedis,
    redis_server: RedisServer,
    receiver: Receiver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    receiver.respond(Response(410), Response(200))
    delivery_id = await schedule(redis, receiver)
    await run_worker(redis_server, make_settings())
    [first] = receiver.wait_for(1)
    assert "body" not in await _stored(redis, delivery_id)  # the dead letter holds it
    letter = await deadletters.get(redis, delivery_id)
    assert letter is not None and letter.delivery.body == first.body.decode()
    shown = await _show(redis_server, capsys, delivery_id)
    assert shown["body"] == first.body.decode() and "body_rebuilt" not in shown

    await redis.delete(wire.result_key("job-1"))  # the result expired before the replay
    assert (
        await callback_delivery.replay_dead_letter(redis, delivery_id)
        is callback_delivery.ReplayOutcome.enqueued
    )
    await run_worker(redis_server, make_settings())

    [_, again] = receiver.wait_for(2)
    assert again.body == first.body and again.headers["webhook-id"] == delivery_id
    assert await deadletters.get(redis, delivery_id) is None
    assert await redis.exists(wire.result_key("job-1")) == 0  # not recreated
    record = await _stored(redis, delivery_id)
    assert "body" not in record
    assert [a["outcome"] for a in record["history"]] == ["dead_lettered", "delivered"]  # type: ignore[union-attr]


async def test_an_ended_deliverys_job_run_again_sends_nothing(
    redis: ArqRedis, redis_server: RedisServer, receiver: Receiver
) -> None:
    """arq runs a job again when a worker died before marking it done; if the result record
    has expired meanwhile, only the record's missing body says the delivery has ended."""
    receiver.respond(Response(410))
    delivery_id = await schedule(redis, receiver)
    await run_worker(redis_server, make_settings())
    assert (await read_state(redis, "job-1")).status is CallbackStatus.dead_lettered
    await redis.delete(wire.result_key("job-1"))
    ref = {"delivery_id": delivery_id, "job_id": "job-1"}
    envelope = arq_compat.envelope(wire.TASK_CALLBACK, {"delivery": ref}, enqueued_ms=1)
    await redis.set(wire.job_key(delivery_id), wire.dumps(envelope))
    await redis.zadd(wire.QUEUE_NAME, {delivery_id: 1})

    await run_worker(redis_server, make_settings())

    assert len(receiver.requests) == 1
    letter = await deadletters.get(redis, delivery_id)
    assert letter is not None and letter.reason is DeadLetterReason.gone
    assert letter.delivery.body is not None


def test_an_old_record_with_its_body_still_reads() -> None:
    """Records written before this change (body kept after delivery) stay readable."""
    old = Delivery(delivery_id="cb-1", job_id="1", url="https://x.example/", body="{}",
                   created_at=1.0)  # fmt: skip
    assert Delivery.model_validate_json(old.model_dump_json()).body == "{}"
    assert old.ended().body is None and old.ended().history == old.history
