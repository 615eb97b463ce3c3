"""Spans of real jobs, kept by an in-memory exporter: producer → worker → MiMo → storage →
callback, one trace; retries, failures, no secrets; with tracing off, the job's own
traceparent still reaches its callback.

Real redis-server (private), the simulator on loopback, a real arq worker in this process.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from arq.connections import ArqRedis
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from mimoq.core import wire
from mimoq.producer.client import Producer
from mimoq.sim.faults import Fault
from mimoq.sim.sim_server import RunningSim
from tests.e2e.conftest import API_KEY, WEBHOOK_SECRET
from tests.support.polling import eventually
from tests.support.receiver import Receiver, Request
from tests.tracing.conftest import Spans

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.usefixtures("worker")]

FOREIGN = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def received(receiver: Receiver, n: int) -> list[Request]:
    return await asyncio.to_thread(receiver.wait_for, n, 30.0)


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def assert_has(span: ReadableSpan, expected: dict[str, Any]) -> None:
    actual = attrs(span)
    wrong = {k: (actual.get(k), v) for k, v in expected.items() if actual.get(k) != v}
    assert not wrong, f"{span.name}: (actual, expected) {wrong}"


def ids_of(span: ReadableSpan) -> list[str]:
    """A span's trace id and span id, as a traceparent spells them."""
    return [f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"]


async def test_one_trace_links_producer_worker_mimo_storage_and_callback(
    spans: Spans, producer: Producer, receiver: Receiver
) -> None:
    job = {
        "kind": "speech",
        "input": "Hello, traced world.",
        "tenant": "team-a",
        "priority": "interactive",
        "callback": {"url": receiver.url("/hook")},
    }
    enqueued = await producer.enqueue(job)
    result = await producer.wait(enqueued.job_id, timeout_s=60)
    assert result.status == "succeeded"
    [request] = await received(receiver, 1)
    job_id = enqueued.job_id
    [delivery] = await eventually(
        lambda: spans.named("POST callback", job_id), what="callback span"
    )
    # The callback's first attempt is made inside the job's attempt: that span ends after it.
    [process] = await eventually(
        lambda: spans.named("process mimoq:queue", job_id), what="the attempt's span"
    )

    [send] = spans.named("send mimoq:queue", job_id)
    trace_id = send.context.trace_id
    assert send.kind is SpanKind.PRODUCER and send.parent is None
    assert_has(
        send,
        {
            "messaging.system": "mimoq",
            "messaging.operation.type": "send",
            "messaging.destination.name": "mimoq:queue",
            "messaging.message.id": job_id,
            "mimoq.job.kind": "speech",
            "mimoq.tenant": "team-a",
            "mimoq.enqueue.created": True,
        },
    )
    # The worker's attempt is the producer span's child, in the same trace.
    assert process.kind is SpanKind.CONSUMER
    assert process.parent is not None and process.parent.span_id == send.context.span_id
    assert process.context.trace_id == trace_id
    assert_has(
        process,
        {
            "messaging.system": "mimoq",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": "mimoq:queue",
            "messaging.message.id": job_id,
            "mimoq.job.try": 1,
            "mimoq.arq.try": 1,
            "mimoq.job.outcome": "succeeded",
            "mimoq.lane": "interactive",
        },
    )
    # Storage write under the attempt; the MiMo call (streamed into it) under the write.
    [write] = [s for s in spans.children(process) if s.name == "storage write"]
    assert_has(
        write,
        {
            "mimoq.storage.key": f"speech/{job_id}.wav",
            "mimoq.storage.backend": "local",
        },
    )
    [call] = [s for s in spans.children(write) if s.kind is SpanKind.CLIENT]
    assert_has(
        call,
        {
            "http.request.method": "POST",
            "url.full": producer.settings.base_url().rstrip("/") + "/chat/completions",
            "http.response.status_code": 200,
            "server.address": "127.0.0.1",
        },
    )
    assert "http.request.resend_count" not in attrs(call)
    # The callback POST: a child of the attempt, and the receiver continues from it.
    assert delivery.kind is SpanKind.CLIENT
    assert delivery.parent is not None and delivery.parent.span_id == process.context.span_id
    assert attrs(delivery)["http.response.status_code"] == 200
    assert request.headers["traceparent"].split("-")[1:3] == ids_of(delivery)
    assert {s.context.trace_id for s in (send, process, write, call, delivery)} == {trace_id}


async def test_a_retried_job_has_one_attempt_span_per_try_and_counts_the_resend(
    spans: Spans, producer: Producer, sim: RunningSim
) -> None:
    sim.state.add_fault(Fault.model_validate({"kind": "status", "status": 503, "times": 1}))
    enqueued = await producer.enqueue({"kind": "speech", "input": "Try me twice."})
    assert (await producer.wait(enqueued.job_id, timeout_s=60)).status == "succeeded"
    job_id = enqueued.job_id

    def outcomes() -> dict[str, ReadableSpan]:
        # A limiter deferral in between is an attempt span of its own ("deferred").
        return {
            attrs(s)["mimoq.job.outcome"]: s for s in spans.named("process mimoq:queue", job_id)
        }

    await eventually(lambda: "succeeded" in outcomes(), what="the successful attempt's span")
    first, second = outcomes()["retrying"], outcomes()["succeeded"]
    assert first.status.status_code is StatusCode.ERROR
    assert attrs(first)["error.type"] == "upstream_unavailable_error"
    assert_has(second, {"mimoq.job.outcome": "succeeded", "mimoq.job.try": 2})
    assert second.status.status_code is not StatusCode.ERROR
    first_call = next(
        s
        for s in spans.all()
        if s.kind is SpanKind.CLIENT
        and s.context.trace_id == first.context.trace_id
        and attrs(s).get("http.response.status_code") == 503
    )
    assert first_call.status.status_code is StatusCode.ERROR
    [second_write] = [s for s in spans.children(second) if s.name == "storage write"]
    [second_call] = [s for s in spans.children(second_write) if s.kind is SpanKind.CLIENT]
    assert attrs(second_call)["http.request.resend_count"] == 1
    assert {first.context.trace_id, second.context.trace_id} == {
        spans.named("send mimoq:queue", enqueued.job_id)[0].context.trace_id
    }


async def test_no_secret_reaches_any_span(
    spans: Spans, producer: Producer, receiver: Receiver, sim: RunningSim
) -> None:
    """The API key (echoed back by MiMo in an error), the webhook secret, a callback's
    Authorization header and a token in its URL: in no attribute, event, status or name."""
    header_token = "Bearer cb-header-token-7f3a9"
    url_token = "url-token-55e1c"
    # MiMo refuses the request, quoting the key in its message (a failure, not a retry).
    sim.state.add_fault(
        Fault.model_validate(
            {
                "kind": "status",
                "status": 400,
                "message": f"bad request for key {API_KEY}",
                "times": 1,
            }
        )
    )
    callback = {
        "url": receiver.url(f"/hook?token={url_token}"),
        "headers": {"Authorization": header_token},
    }
    failing = await producer.enqueue(
        {"kind": "speech", "input": "I will fail.", "callback": callback}
    )
    assert (await producer.wait(failing.job_id, timeout_s=60)).status == "failed"
    working = await producer.enqueue(
        {"kind": "speech", "input": "I will work.", "callback": callback}
    )
    assert (await producer.wait(working.job_id, timeout_s=60)).status == "succeeded"
    requests = await received(receiver, 2)
    assert all(r.headers["authorization"] == header_token for r in requests)
    await eventually(lambda: len(spans.named("POST callback")) == 2, what="two callback spans")
    # each callback's first attempt is inside its job's attempt, whose span ends after it
    for job_id in (failing.job_id, working.job_id):
        await eventually(
            lambda j=job_id: spans.named("process mimoq:queue", j), what="the attempt's span"
        )

    [failed] = spans.named("process mimoq:queue", failing.job_id)
    assert failed.status.status_code is StatusCode.ERROR
    assert attrs(failed)["mimoq.job.outcome"] == "failed"
    text = json.dumps(
        [
            {
                "name": s.name,
                "attributes": attrs(s),
                "events": [(e.name, dict(e.attributes or {})) for e in s.events],
                "status": s.status.description,
                "resource": dict(s.resource.attributes),
                "links": [dict(link.attributes or {}) for link in s.links],
            }
            for s in spans.all()
        ],
        default=str,
    )
    assert len(spans.all()) >= 10
    for secret in (
        API_KEY,
        WEBHOOK_SECRET,
        WEBHOOK_SECRET.removeprefix("whsec_"),
        "cb-header-token",
        url_token,
    ):
        assert secret not in text


async def test_a_foreign_producers_traceparent_is_continued(
    spans: Spans, redis: ArqRedis, producer: Producer
) -> None:
    """A producer in another language sets the documented job field: the worker's attempt
    becomes a child of that span."""
    script = redis.register_script(wire.enqueue_script())
    job = {"kind": "speech", "input": "From elsewhere.", "traceparent": FOREIGN}
    assert await script(keys=wire.enqueue_keys("foreign-1"), args=["foreign-1", json.dumps(job)])
    assert (await producer.wait("foreign-1", timeout_s=60)).status == "succeeded"
    [process] = await eventually(
        lambda: spans.named("process mimoq:queue", "foreign-1"), what="span"
    )
    assert f"{process.context.trace_id:032x}" == FOREIGN.split("-")[1]
    assert process.parent is not None and f"{process.parent.span_id:016x}" == FOREIGN.split("-")[2]


async def test_chunk_jobs_of_a_long_text_continue_the_trace_under_the_planning_attempt(
    spans: Spans, producer: Producer
) -> None:
    text = " ".join(f"Sentence number {i} of a long chapter." for i in range(160))  # > 2,500
    enqueued = await producer.enqueue({"kind": "speech", "input": text})
    assert (await producer.wait(enqueued.job_id, timeout_s=60)).status == "succeeded"
    [send] = spans.named("send mimoq:queue", enqueued.job_id)
    parents = await eventually(
        lambda: [
            s for s in spans.named("process mimoq:queue", enqueued.job_id)
            if attrs(s).get("mimoq.job.outcome") == "succeeded"
        ],
        what="the parent's final attempt span",
    )  # fmt: skip
    attempts = spans.named("process mimoq:queue", enqueued.job_id)
    chunks = [
        s for s in spans.named("process mimoq:queue")
        if str(attrs(s)["messaging.message.id"]).startswith(enqueued.job_id + ".")
    ]  # fmt: skip
    assert parents and len({attrs(c)["messaging.message.id"] for c in chunks}) >= 2
    planner_ids = {a.context.span_id for a in attempts}
    for chunk in chunks:
        assert chunk.context.trace_id == send.context.trace_id
        assert chunk.parent is not None and chunk.parent.span_id in planner_ids
