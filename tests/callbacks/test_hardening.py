"""Callbacks against hostile input: forged delivery jobs, odd headers, odd receivers."""

from __future__ import annotations

import json
import threading
import time

import pytest
from arq.connections import ArqRedis
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook
from structlog.testing import capture_logs

from mimoq.core import deadletters, deliveries, wire
from mimoq.core.deadletters import DeadLetterReason
from mimoq.core.jobs import Callback, CallbackStatus
from mimoq.worker import callback_delivery
from tests.callbacks.conftest import (
    SECRET_A,
    make_settings,
    read_state,
    run_worker,
    schedule,
    worker_running,
)
from tests.conftest import RedisServer
from tests.support.receiver import Receiver, Response

pytestmark = pytest.mark.redis


async def _forge(redis: ArqRedis, arq_id: str, delivery: object) -> None:
    """What anyone with write access to the queue can do: a raw job and a ZADD."""
    envelope = {"t": None, "f": wire.TASK_CALLBACK, "a": [], "k": {"delivery": delivery}, "et": 1}
    await redis.set(wire.job_key(arq_id), json.dumps(envelope))
    await redis.zadd(wire.QUEUE_NAME, {arq_id: int(time.time() * 1000)})


async def test_forged_delivery_jobs_are_refused_and_nothing_is_posted(
    redis: ArqRedis, redis_server: RedisServer, receiver: Receiver
) -> None:
    forged_body = '{"type":"job.succeeded","job_id":"victim","status":"succeeded"}'
    # 1. the attack from the issue: its own url and body, for an id that never ran
    await _forge(
        redis,
        "cb-victim",
        {
            "delivery_id": "cb-victim",
            "job_id": "victim",
            "url": receiver.url("/forged"),
            "headers": {},
            "body": forged_body,
            "created_at": 0.0,
        },
    )
    # 2. ids only, but no worker ever scheduled this delivery
    await _forge(redis, "cb-ghost", {"delivery_id": "cb-ghost", "job_id": "ghost"})
    # 3. a real delivery's ids under another arq id (would re-send it unasked)
    await schedule(redis, receiver, job_id="real", path="/real")
    await _forge(redis, "evil", {"delivery_id": "cb-real", "job_id": "real"})
    # 4. not even a dict
    await _forge(redis, "cb-junk", ["cb-junk"])

    with capture_logs() as logs:
        await run_worker(redis_server, make_settings())

    refused = {e["delivery_id"]: e["reason"] for e in logs if e["event"] == "callback.refused"}
    assert set(refused) == {"cb-victim", "cb-ghost", "evil", "cb-junk"}
    assert "own url" in refused["cb-victim"]
    assert "no delivery record" in refused["cb-ghost"]
    assert "do not match" in refused["evil"]
    # Only the genuine delivery went out, once, with the body the worker built.
    [request] = receiver.wait_for(1)
    assert request.path == "/real"
    assert Webhook(SECRET_A).verify(request.body, request.headers)["job_id"] == "real"
    assert all(r.path != "/forged" for r in receiver.requests)
    assert [letter async for letter in deadletters.iterate(redis)] == []
    assert await redis.zcard(wire.QUEUE_NAME) == 0  # refused jobs are finished, not stuck


async def test_the_public_enqueue_script_cannot_start_an_internal_task(redis: ArqRedis) -> None:
    script = redis.register_script(wire.enqueue_script())
    for kind in (wire.TASK_CALLBACK, wire.TASK_INVALID):
        job = {"kind": kind, "delivery_id": "cb-x", "job_id": "x"}
        with pytest.raises(Exception, match="invalid_request_error: kind must be"):
            await script(keys=wire.enqueue_keys("cb-x"), args=["cb-x", json.dumps(job)])
    assert await redis.exists(wire.job_key("cb-x"), deliveries.key("cb-x")) == 0


async def test_the_job_carries_only_ids_and_the_record_holds_the_rest(
    redis: ArqRedis, receiver: Receiver
) -> None:
    delivery_id = await schedule(redis, receiver, headers={"X-Customer": "Zoë"})
    envelope = json.loads(await redis.get(wire.job_key(delivery_id)))
    assert envelope["k"] == {"delivery": {"delivery_id": delivery_id, "job_id": "job-1"}}
    stored = await deliveries.load(redis, delivery_id)
    assert stored is not None and stored.url == receiver.url("/hook")
    assert stored.headers == {"X-Customer": "Zoë"}
    assert json.loads(stored.body)["job_id"] == "job-1"


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({"X Customer": "a"}, "not a valid HTTP field name"),
        ({"X-Customer:": "a"}, "not a valid HTTP field name"),
        ({"": "a"}, "not a valid HTTP field name"),
        ({"X-Customer": "a\r\nX-Injected: 1"}, "no CR, LF"),
        ({"X-Customer": "a\nb"}, "no CR, LF"),
        ({"X-Customer": "nul\x00"}, "no CR, LF"),
        ({"X-Customer": "snow ☃"}, "latin-1"),
        ({"X-Customer": "\udc00"}, "latin-1"),
        ({"X-Customer": " padded"}, "may not start or end"),
    ],
)
def test_bad_callback_headers_are_refused_at_enqueue_naming_the_header(
    headers: dict[str, str], fragment: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        Callback(url="https://hooks.example/cb", headers=headers)
    [error] = caught.value.errors()
    assert error["type"] == "invalid_request_error"
    assert fragment in error["msg"] and "callback.headers" in error["msg"]
    assert "X-Injected: 1" not in error["msg"]  # never echoes a value


def test_latin1_and_visible_ascii_header_values_are_accepted() -> None:
    headers = {"X-Customer": "Zoë Ünal", "Authorization": "Bearer a.b-c~d+e/f=", "X-Tab": "a\tb"}
    assert Callback(url="https://hooks.example/cb", headers=headers).headers == headers


async def test_a_latin1_header_value_is_sent_as_latin1(
    redis: ArqRedis, redis_server: RedisServer, receiver: Receiver
) -> None:
    await schedule(redis, receiver, headers={"X-Customer": "Zoë"})

    await run_worker(redis_server, make_settings())

    [request] = receiver.wait_for(1)
    assert request.headers["x-customer"] == "Zoë"  # http.server decodes latin-1
    assert (await read_state(redis, "job-1")).status is CallbackStatus.delivered


async def test_an_unsendable_stored_header_is_dead_lettered_internal_and_nothing_posted(
    redis: ArqRedis, redis_server: RedisServer, receiver: Receiver
) -> None:
    # A record from before the header rules (or any bug): the worker's own check catches it.
    delivery_id = await schedule(redis, receiver)
    stored = await deliveries.load(redis, delivery_id)
    assert stored is not None
    bad = stored.model_copy(update={"headers": {"X-Customer": "snow ☃\r\nX-Evil: 1"}})
    await deliveries.save(redis, bad, ttl_s=3600)

    with capture_logs() as logs:
        await run_worker(redis_server, make_settings())

    assert receiver.requests == []
    letter = await deadletters.get(redis, delivery_id)
    assert letter is not None and letter.reason is DeadLetterReason.internal
    assert "X-Customer" in (letter.last_error or "") and "snow" not in (letter.last_error or "")
    state = await read_state(redis, "job-1")
    assert state.status is CallbackStatus.dead_lettered  # not stuck at pending
    assert [a.outcome for a in letter.delivery.history] == ["internal"]
    assert "snow" not in repr(logs)
    # Fixed and replayed, it goes out, and the history keeps both attempts.
    await deadletters.put(
        redis,
        letter.model_copy(update={"delivery": letter.delivery.model_copy(update={"headers": {}})}),
        ttl_s=86_400,
    )
    assert (
        await callback_delivery.replay_dead_letter(redis, delivery_id)
        is callback_delivery.ReplayOutcome.enqueued
    )
    await run_worker(redis_server, make_settings())
    assert len(receiver.wait_for(1)) == 1
    record = await deliveries.load(redis, delivery_id)
    assert record is not None
    assert [a.outcome for a in record.history] == ["internal", "delivered"]


async def test_a_2xx_whose_body_stalls_is_delivered_once(
    redis: ArqRedis, redis_server: RedisServer, receiver: Receiver
) -> None:
    stall = threading.Event()
    receiver.respond(Response(200, body=b'{"ok":', stall_body=stall))
    settings = make_settings(callbacks={"timeout_s": 0.5, "schedule_s": "0,0.05,0.05"})
    delivery_id = await schedule(redis, receiver)

    try:
        await run_worker(redis_server, settings)
    finally:
        stall.set()

    assert len(receiver.requests) == 1  # no duplicate delivery
    state = await read_state(redis, "job-1")
    assert (state.status, state.attempts, state.last_error) == (CallbackStatus.delivered, 1, None)
    assert await deadletters.get(redis, delivery_id) is None
    record = await deliveries.load(redis, delivery_id)
    assert record is not None
    [attempt] = record.history
    assert (attempt.outcome, attempt.status_code) == ("delivered", 200)


async def test_every_attempt_is_kept_and_a_replay_keeps_the_history(
    redis: ArqRedis, redis_server: RedisServer, receiver: Receiver
) -> None:
    receiver.respond(Response(500), Response(503), Response(500), Response(204))
    settings = make_settings(callbacks={"schedule_s": "0,0.05,0.05"})
    delivery_id = await schedule(redis, receiver)
    before = time.time()

    await run_worker(redis_server, settings)  # 500, 503, 500: exhausted
    letter = await deadletters.get(redis, delivery_id)
    assert letter is not None and letter.reason is DeadLetterReason.exhausted
    assert [(a.outcome, a.status_code) for a in letter.delivery.history] == [
        ("retry", 500),
        ("retry", 503),
        ("dead_lettered", 500),
    ]
    for attempt in letter.delivery.history:
        assert before <= attempt.at <= time.time() and 0 <= attempt.duration_s < 5
        assert attempt.error == f"HTTP {attempt.status_code}"

    assert (
        await callback_delivery.replay_dead_letter(redis, delivery_id)
        is callback_delivery.ReplayOutcome.enqueued
    )
    async with worker_running(redis_server, settings):
        pass

    record = await deliveries.load(redis, delivery_id)
    assert record is not None and record.replays == 1
    assert [(a.outcome, a.status_code) for a in record.history] == [
        ("retry", 500),
        ("retry", 503),
        ("dead_lettered", 500),
        ("delivered", 204),
    ]
    assert await deadletters.get(redis, delivery_id) is None  # delivered: no longer dead
    state = await read_state(redis, "job-1")
    assert (state.status, state.attempts) == (CallbackStatus.delivered, 4)
