"""Whose job it was: the token's tenant and the lane reach the result record, `mimoq status`
and the callback (issue 19, item 4), also for a job the worker refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from mimoq.core import wire
from tests.http.conftest import ALICE, HttpAs, Stack
from tests.support.cli import mimoq
from tests.support.polling import wait_until
from tests.support.receiver import Receiver

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as rx:
        yield rx


def _finished(stack: Stack, http_as: HttpAs, job_id: str) -> dict[str, Any]:
    http = http_as(ALICE)

    def done() -> dict[str, Any] | None:
        body: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
        return body if body["status"] in ("succeeded", "failed") else None

    record = wait_until(done, what=f"job {job_id} to finish")
    assert isinstance(record, dict)
    return record


def _status_cli(stack: Stack, job_id: str, tmp_path: Any) -> dict[str, Any]:
    proc = mimoq("status", job_id, env=stack.env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def test_a_tokens_tenant_and_lane_reach_the_record_the_cli_and_the_callback(
    stack: Stack, http_as: HttpAs, receiver: Receiver, tmp_path: Any
) -> None:
    answer = http_as(ALICE).post(
        "/v1/audio/speech",
        json={
            "model": "tts-1",
            "input": "Whose job is this?",
            "voice": "Mia",
            "callback": {"url": receiver.url("/hook")},
        },
        headers={"Prefer": "respond-async"},
    )
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]

    record = _finished(stack, http_as, job_id)
    assert record["status"] == "succeeded"
    assert (record["tenant"], record["priority"]) == ("alice", "interactive")

    result = _status_cli(stack, job_id, tmp_path)["result"]
    assert (result["tenant"], result["priority"]) == ("alice", "interactive")

    [request] = receiver.wait_for(1, timeout=60)
    body = request.json()
    assert body["job_id"] == job_id and body["type"] == "job.succeeded"
    assert (body["tenant"], body["priority"]) == ("alice", "interactive")


def test_a_job_refused_by_the_worker_still_says_whose_it_was(
    stack: Stack, receiver: Receiver, tmp_path: Any
) -> None:
    """Sent raw through the public enqueue script, valid owner fields, an invalid ``speed``:
    the failure record and its callback keep the tenant and the lane the job named."""
    redis = stack.redis()
    job = {
        "kind": "speech",
        "input": "Too fast.",
        "speed": 2,
        "tenant": "beta",
        "priority": "bulk",
        "callback": {"url": receiver.url("/hook")},
    }
    added = redis.eval(wire.enqueue_script(), 4, *wire.enqueue_keys("owner-bad-1"),
                       "owner-bad-1", json.dumps(job))  # fmt: skip
    assert added == 1
    # A malformed tenant is left out rather than echoed; the missing lane is the default one.
    odd = {"kind": "speech", "input": "Hi.", "speed": 3, "tenant": "beta\n"}
    raw = '{"t":null,"f":"speech","a":[],"k":{"job":' + json.dumps(odd) + '},"et":1}'
    redis.set(wire.job_key("owner-bad-2"), raw)
    redis.zadd(wire.QUEUE_NAME, {"owner-bad-2": 0})

    def result_of(job_id: str) -> dict[str, Any] | None:
        report = _status_cli(stack, job_id, tmp_path)
        return report.get("result")

    first = wait_until(lambda: result_of("owner-bad-1"), what="the refused job's record")
    assert first["status"] == "failed" and first["error"]["param"] == "speed"
    assert (first["tenant"], first["priority"]) == ("beta", "bulk")
    [request] = receiver.wait_for(1, timeout=60)
    body = request.json()
    assert body["type"] == "job.failed"
    assert (body["tenant"], body["priority"]) == ("beta", "bulk")

    second = wait_until(lambda: result_of("owner-bad-2"), what="the odd job's record")
    assert second["status"] == "failed"
    assert (second["tenant"], second["priority"]) == (None, "interactive")
