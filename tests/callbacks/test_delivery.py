"""End to end: schedule_callback → a real arq worker → a loopback receiver, against Redis."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Sequence

import pytest
from arq.connections import ArqRedis
from standardwebhooks.webhooks import Webhook
from structlog.testing import capture_logs

from mimoq.core import deadletters, wire
from mimoq.core.deadletters import DeadLetterReason
from mimoq.core.jobs import Callback, CallbackStatus
from mimoq.core.ssrf import check_callback_url
from mimoq.core.webhooks import Delivery
from mimoq.worker import callback_delivery
from tests.callbacks.conftest import (
    SECRET_A,
    SECRET_B,
    eventually,
    make_result,
    make_settings,
    read_state,
    run_worker,
    schedule,
    store_result,
    worker_running,
)
from tests.conftest import RedisServer
from tests.support.receiver import Receiver, Response

pytestmark = pytest.mark.redis


async def test_delivered_once_signed_and_the_record_says_so(
    redis: ArqRedis, redis_server: RedisServer, receiver: Receiver
) -> None:
    delivery_id = await schedule(redis, receiver)
    assert (await read_state(redis, "job-1")).status is CallbackStatus.pending

    await run_worker(redis_server, make_settings())

    [request] = receiver.wait_for(1)
    assert request.method == "POST" and request.path == "/hook"
    assert request.headers["webhook-id"] == delivery_id == "cb-job-1"
    assert request.headers["content-type"] == "application/json"
    payload = Webhook(SECRET_A).verify(request.body, request.headers)
    assert payload["type"] == "job.succeeded"
    assert payload["delivery_id"] == delivery_id and payload["job_id"] == "job-1"
    assert payload["metadata"] == {"order": 7, "note": "naïve ☃"}
    state = await read_state(redis, "job-1")
    assert state.status is CallbackStatus.delivered
    assert (state.delivery_id, state.attempts, state.last_error) == (delivery_id, 1, None)
    assert await redis.ttl(wire.result_key("job-1")) > 3000  # KEEPTTL: the record still expires
    assert await redis.exists(wire.job_key(delivery_id)) == 0


async def test_receiver_down_then_up_gets_it_once_with_the_same_id(
    redis: ArqRedis, redis_server: RedisServer, receiver: Receiver
) -> None:
    receiver.down()
    settings = make_settings(callbacks={"schedule_s": "0,0.3,0.3"})
    delivery_id = await schedule(redis, receiver)

    async def first_attempt_failed() -> bool:
        state = await read_state(redis, "job-1")
        return state.attempts == 1 and state.last_error is not None

    async with worker_running(redis_server, settings):
        await eventually(first_attempt_failed)
        state = await read_state(redis, "job-1")
        assert state.status is CallbackStatus.pending
        assert "ConnectError" in (state.last_error or "")
        receiver.up()

    [request] = receiver.wait_for(1)
    assert request.headers["webhook-id"] == delivery_id
    Webhook(SECRET_A).verify(request.body, request.headers)
    state = await read_state(redis, "job-1")
    assert (state.status, state.attempts, state.last_error) == (CallbackStatus.delivered, 2, None)
    assert len(receiver.requests) == 1


async def test_410_stops_and_dead_letters_as_gone(
    redis: ArqRedis, redis_server: RedisServer, receiver: Receiver
) -> None:
    receiver.respond(Response(410))
    delivery_id = await schedule(redis, receiver)

    await run_worker(redis_server, make_settings())

    assert len(receiver.requests) == 1
    letter = await deadletters.get(redis, delivery_id)
    assert letter is not None
    assert (letter.reason, letter.attempts, letter.last_status) == (DeadLetterReason.gone, 1, 410)
    state = await read_state(redis, "job-1")
    assert (state.status, state.last_error) == (CallbackStatus.dead_lettered, "HTTP 410")


async def test_500s_follow_the_schedule_then_dead_letter(
    redis: ArqRedis, redis_server: RedisServer, receiver: Receiver
) -> None:
    schedule_s = (0.0, 0.2, 0.4, 0.8)
    receiver.respond(*[Response(500)] * len(schedule_s))
    delivery_id = await schedule(redis, receiver)

    await run_worker(redis_server, make_settings(callbacks={"schedule_s": schedule_s}))

    requests = receiver.wait_for(len(schedule_s))
    assert len(requests) == len(schedule_s)  # exactly one attempt per entry, then it stopped
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(requests)]
    # never early (so each entry was used, in order); late only by a loaded host's scheduling,
    # still far from the default schedule's 5 s (a latency bound is bench/ material)
    for gap, planned in zip(gaps, schedule_s[1:], strict=True):
        assert planned <= gap < planned + 2.0, (gaps, schedule_s)
    assert {r.headers["webhook-id"] for r in requests} == {delivery_id}
    assert len({r.body for r in requests}) == 1  # identical bytes on every attempt
    letter = await deadletters.get(redis, delivery_id)
    assert letter is not None
    assert (letter.reason, letter.attempts, letter.last_error) == (
        DeadLetterReason.exhausted,
        4,
        "HTTP 500",
    )
    state = await read_state(redis, "job-1")
    assert (state.status, state.attempts) == (CallbackStatus.dead_lettered, 4)


async def test_a_redirect_is_final_at_once_not_followed_and_its_location_kept(
    redis: ArqRedis, redis_server: RedisServer, receiver: Receiver
) -> None:
    with Receiver() as elsewhere:
        moved = Response(307, headers={"Location": elsewhere.url("/stolen?t=1")})
        receiver.respond(moved, moved)
        delivery_id = await schedule(redis, receiver)

        await run_worker(redis_server, make_settings(callbacks={"schedule_s": "0,0.05,0.05"}))

        assert elsewhere.requests == []
    assert len(receiver.requests) == 1  # asking again would get the same answer
    letter = await deadletters.get(redis, delivery_id)
    assert letter is not None
    assert (letter.reason, letter.last_status) == (DeadLetterReason.redirect, 307)
    assert letter.last_location == elsewhere.url("/stolen?t=1")
    assert letter.summary()["location"] == f"http://127.0.0.1:{elsewhere.port}"  # no path
    [attempt] = letter.delivery.history
    assert (attempt.status_code, attempt.location) == (307, elsewhere.url("/stolen?t=1"))
    state = await read_state(redis, "job-1")
    assert state.status is CallbackStatus.dead_lettered
    assert state.last_error == f"HTTP 307 redirect to http://127.0.0.1:{elsewhere.port}"


async def test_400_is_final_without_retry(
    redis: ArqRedis, redis_server: RedisServer, receiver: Receiver
) -> None:
    receiver.respond(Response(400, body=b'{"error":"bad"}'))
    delivery_id = await schedule(redis, receiver)

    await run_worker(redis_server, make_settings())

    assert len(receiver.requests) == 1
    letter = await deadletters.get(redis, delivery_id)
    assert letter is not None
    assert (letter.reason, letter.attempts, letter.last_status) == (
        DeadLetterReason.final_status,
        1,
        400,
    )


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_honoured(
    redis: ArqRedis, redis_server: RedisServer, receiver: Receiver, status: int
) -> None:
    receiver.respond(Response(status, headers={"Retry-After": "1"}))
    await schedule(redis, receiver)

    await run_worker(redis_server, make_settings(callbacks={"schedule_s": "0,0.05"}))

    first, second = receiver.wait_for(2)
    assert second.received_at - first.received_at >= 1.0  # not the schedule's 0.05 s
    assert (await read_state(redis, "job-1")).status is CallbackStatus.delivered


async def test_retry_after_is_capped(
    redis: ArqRedis, redis_server: RedisServer, receiver: Receiver
) -> None:
    receiver.respond(Response(503, headers={"Retry-After": "86400"}))
    await schedule(redis, receiver)
    settings = make_settings(callbacks={"schedule_s": "0,0.05", "retry_after_max_s": 0.2})

    await run_worker(redis_server, settings)

    first, second = receiver.wait_for(2)
    assert 0.2 <= second.received_at - first.received_at < 1.0


async def test_rotation_two_secrets_verify_under_either(
    redis: ArqRedis, redis_server: RedisServer, receiver: Receiver
) -> None:
    await schedule(redis, receiver)

    await run_worker(redis_server, make_settings(callbacks={"secret": f"{SECRET_A} {SECRET_B}"}))

    [request] = receiver.wait_for(1)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for secret in (SECRET_A, SECRET_B):
        assert Webhook(secret).verify(request.body, request.headers)["job_id"] == "job-1"


async def test_without_a_secret_no_signature_but_id_and_timestamp(
    redis: ArqRedis, redis_server: RedisServer, receiver: Receiver
) -> None:
    await schedule(redis, receiver, headers={"X-Team": "audio"})

    await run_worker(redis_server, make_settings(callbacks={"secret": None}))

    [request] = receiver.wait_for(1)
    assert "webhook-signature" not in request.headers
    assert request.headers["webhook-id"] == "cb-job-1"
    assert request.headers["webhook-timestamp"].isdigit()
    assert request.headers["x-team"] == "audio"


async def test_replay_resends_the_same_id_and_clears_the_dead_letter(
    redis: ArqRedis, redis_server: RedisServer, receiver: Receiver
) -> None:
    receiver.respond(Response(500), Response(500))
    settings = make_settings(callbacks={"schedule_s": "0,0.05"})
    delivery_id = await schedule(redis, receiver)
    await run_worker(redis_server, settings)
    assert (await read_state(redis, "job-1")).status is CallbackStatus.dead_lettered
    assert await deadletters.get(redis, delivery_id) is not None

    assert (
        await callback_delivery.replay_dead_letter(redis, delivery_id)
        is callback_delivery.ReplayOutcome.enqueued
    )
    assert (
        await callback_delivery.replay_dead_letter(redis, delivery_id)
        is callback_delivery.ReplayOutcome.already_pending
    )
    assert (await read_state(redis, "job-1")).status is CallbackStatus.pending
    await run_worker(redis_server, settings)

    requests = receiver.wait_for(3)
    assert [r.headers["webhook-id"] for r in requests] == [delivery_id] * 3
    assert len({r.body for r in requests}) == 1
    Webhook(SECRET_A).verify(requests[2].body, requests[2].headers)
    state = await read_state(redis, "job-1")
    assert (state.status, state.attempts) == (CallbackStatus.delivered, 3)  # 2 before + 1
    assert await deadletters.get(redis, delivery_id) is None
    assert await redis.zscore(wire.DEAD_LETTER_INDEX, delivery_id) is None
    assert (
        await callback_delivery.replay_dead_letter(redis, delivery_id)
        is callback_delivery.ReplayOutcome.not_found
    )


async def test_a_replay_that_fails_again_stays_dead_lettered_with_all_attempts_counted(
    redis: ArqRedis, redis_server: RedisServer, receiver: Receiver
) -> None:
    receiver.respond(Response(404), Response(404))
    delivery_id = await schedule(redis, receiver)
    settings = make_settings()
    await run_worker(redis_server, settings)
    await callback_delivery.replay_dead_letter(redis, delivery_id)
    await run_worker(redis_server, settings)

    letter = await deadletters.get(redis, delivery_id)
    assert letter is not None
    assert (letter.attempts, letter.delivery.replays) == (2, 1)
    assert len(receiver.requests) == 2


async def test_an_expired_result_record_does_not_stop_delivery(
    redis: ArqRedis, redis_server: RedisServer, receiver: Receiver
) -> None:
    await schedule(redis, receiver, store=False)

    await run_worker(redis_server, make_settings())

    [request] = receiver.wait_for(1)
    assert request.json()["job_id"] == "job-1"
    assert await redis.exists(wire.result_key("job-1")) == 0  # not recreated


async def test_a_record_already_delivered_is_not_sent_again(
    redis: ArqRedis, redis_server: RedisServer, receiver: Receiver
) -> None:
    await schedule(redis, receiver)
    await run_worker(redis_server, make_settings())
    # arq may run a job twice (a worker died after the POST): the record says delivered.
    result = make_result("job-1")
    result.callback.status = CallbackStatus.delivered
    await store_result(redis, result)
    assert await callback_delivery.enqueue_delivery(redis, _delivery_of(receiver))

    await run_worker(redis_server, make_settings())

    assert len(receiver.requests) == 1


def _delivery_of(receiver: Receiver) -> Delivery:
    return Delivery(
        delivery_id="cb-job-1",
        job_id="job-1",
        url=receiver.url("/hook"),
        body="{}",
        created_at=0.0,
    )


async def test_scheduling_twice_delivers_once(
    redis: ArqRedis, redis_server: RedisServer, receiver: Receiver
) -> None:
    first = await schedule(redis, receiver)
    second = await schedule(redis, receiver, store=False)
    assert first == second
    assert await redis.zcard(wire.QUEUE_NAME) == 1

    await run_worker(redis_server, make_settings())

    assert len(receiver.wait_for(1)) == 1


async def test_the_first_attempt_waits_for_the_first_schedule_entry(
    redis: ArqRedis, receiver: Receiver
) -> None:
    result = make_result()
    settings = make_settings(callbacks={"schedule_s": "30,5"})
    callback = Callback(url=receiver.url("/hook"))
    delivery_id = await callback_delivery.schedule_callback(
        redis, result, callback, settings=settings
    )
    score = await redis.zscore(wire.QUEUE_NAME, delivery_id)
    now_ms = (await redis.time())[0] * 1000
    assert score is not None and 29_000 <= score - now_ms <= 31_000
    assert await redis.pttl(wire.job_key(delivery_id)) > 86_400_000  # outlives the wait


async def test_a_timeout_is_a_retryable_failure(
    redis: ArqRedis, redis_server: RedisServer, receiver: Receiver
) -> None:
    release = threading.Event()
    receiver.respond(Response(200, hold=release))
    settings = make_settings(callbacks={"timeout_s": 0.3, "schedule_s": "0,0.05"})
    await schedule(redis, receiver)

    try:
        await run_worker(redis_server, settings)
    finally:
        release.set()

    assert len(receiver.wait_for(2)) == 2
    state = await read_state(redis, "job-1")
    assert (state.status, state.attempts) == (CallbackStatus.delivered, 2)


async def test_dns_rebinding_is_refused_at_delivery(
    redis: ArqRedis, redis_server: RedisServer, receiver: Receiver
) -> None:
    answers = {"enqueue": ["93.184.215.14"], "delivery": ["127.0.0.1"]}
    phase = "enqueue"

    async def rebinding_dns(host: str, port: int) -> Sequence[str]:
        assert host == "hooks.example"
        return answers[phase]

    url = f"http://hooks.example:{receiver.port}/hook"
    # production default: nothing private
    settings = make_settings(callbacks={"allow_networks": ""})
    await check_callback_url(url, settings, resolver=rebinding_dns)  # the producer's check
    delivery_id = await schedule(redis, receiver, url=url)
    phase = "delivery"

    await run_worker(redis_server, settings, callback_resolver=rebinding_dns)

    assert receiver.requests == []
    letter = await deadletters.get(redis, delivery_id)
    assert letter is not None
    assert letter.reason is DeadLetterReason.refused
    assert "127.0.0.1 (loopback)" in (letter.last_error or "")


async def test_a_name_is_pinned_to_its_checked_address_with_the_host_header_kept(
    redis: ArqRedis, redis_server: RedisServer, receiver: Receiver
) -> None:
    async def dns(host: str, port: int) -> Sequence[str]:
        return ["127.0.0.1"]

    url = f"http://hooks.example:{receiver.port}/hook?k=v"
    await schedule(redis, receiver, url=url)

    await run_worker(redis_server, make_settings(), callback_resolver=dns)

    [request] = receiver.wait_for(1)
    assert request.headers["host"] == f"hooks.example:{receiver.port}"
    assert request.path == "/hook?k=v"


async def test_a_malformed_delivery_job_is_refused_and_the_worker_carries_on(
    redis: ArqRedis, redis_server: RedisServer, receiver: Receiver
) -> None:
    envelope = wire.serialize(
        {"t": None, "f": wire.TASK_CALLBACK, "a": [], "k": {"delivery": {"job_id": 5}}, "et": 0}
    )
    await redis.set(wire.job_key("cb-foreign"), envelope)
    await redis.zadd(wire.QUEUE_NAME, {"cb-foreign": int(time.time() * 1000)})
    await schedule(redis, receiver)  # a real one, in the same run

    with capture_logs() as logs:
        await run_worker(redis_server, make_settings())

    [refused] = [e for e in logs if e["event"] == "callback.refused"]
    assert refused["delivery_id"] == "cb-foreign" and "malformed" in refused["reason"]
    assert await deadletters.get(redis, "cb-foreign") is None  # nothing of its to keep
    assert [r.headers["webhook-id"] for r in receiver.wait_for(1)] == ["cb-job-1"]


async def test_logs_carry_the_attempt_but_never_secrets_or_user_header_values(
    redis: ArqRedis, redis_server: RedisServer, receiver: Receiver
) -> None:
    receiver.respond(Response(500))
    url = receiver.url("/hook/path-token?query-token=q1w2e3")
    user = "http-user-name"
    await schedule(
        redis,
        receiver,
        url=url.replace("://", f"://{user}:pass-word@"),
        headers={"Authorization": "Bearer user-supplied-credential"},
    )
    settings = make_settings(callbacks={"secret": f"{SECRET_A} {SECRET_B}", "schedule_s": "0,0.05"})

    with capture_logs() as logs:
        await run_worker(redis_server, settings)

    attempts = [e for e in logs if e["event"] == "callback.attempt"]
    assert [(e["attempt"], e["outcome"]) for e in attempts] == [(1, "retry"), (2, "delivered")]
    assert attempts[0]["status_code"] == 500 and attempts[0]["next_attempt_in_s"] >= 0.05
    assert all(e["job_id"] == "job-1" and e["delivery_id"] == "cb-job-1" for e in attempts)
    assert attempts[0]["target"] == f"http://127.0.0.1:{receiver.port}"
    text = repr(logs)
    signatures = [r.headers["webhook-signature"] for r in receiver.wait_for(2)]
    for forbidden in (
        SECRET_A,
        SECRET_B,
        SECRET_A.removeprefix("whsec_"),
        SECRET_B.removeprefix("whsec_"),
        "user-supplied-credential",
        "q1w2e3",
        "path-token",
        user,
        "pass-word",
        *[s for sig in signatures for s in sig.split(" ")],
    ):
        assert forbidden not in text


async def test_connection_errors_are_logged_without_the_url(
    redis: ArqRedis, redis_server: RedisServer, receiver: Receiver
) -> None:
    receiver.down()
    await schedule(redis, receiver, url=receiver.url("/x?token=zz9"))

    with capture_logs() as logs:
        await run_worker(redis_server, make_settings(callbacks={"schedule_s": "0"}))

    [event] = [e for e in logs if e["event"] == "callback.attempt"]
    assert event["outcome"] == "dead_lettered" and event["reason"] == "exhausted"
    assert "ConnectError" in event["error"]
    assert "zz9" not in repr(logs)


async def test_concurrent_deliveries_each_arrive_once(
    redis: ArqRedis, redis_server: RedisServer, receiver: Receiver
) -> None:
    ids = await asyncio.gather(*(schedule(redis, receiver, job_id=f"job-{i}") for i in range(20)))

    await run_worker(redis_server, make_settings())

    requests = receiver.wait_for(20)
    assert sorted(r.headers["webhook-id"] for r in requests) == sorted(ids)
