"""``POST /v1/jobs/{id}/cancel`` and ``mimoq cancel`` against a running front door and worker
(docs/cancel.md): owner-scoped like ``GET /v1/jobs/{id}``, the same answers as the CLI."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from mimoq.http.frontdoor import request_job_id
from mimoq.sim.faults import Fault
from tests.http.conftest import ALICE, BOB, HttpAs, Stack
from tests.support.cli import mimoq
from tests.support.polling import wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _submit(http_as: HttpAs, text: str) -> str:
    answer = http_as(ALICE).post(
        "/v1/audio/speech",
        json={"model": "tts-1", "input": text, "voice": "Mia"},
        headers={"Prefer": "respond-async"},
    )
    assert answer.status_code == 202, answer.text
    job_id: str = answer.json()["id"]
    return job_id


def test_only_the_owner_cancels_and_an_in_flight_call_is_closed(
    stack: Stack, http_as: HttpAs
) -> None:
    stack.sim.state.add_fault(Fault(kind="latency", ms=6_000, match="cancel me over http"))
    job_id = _submit(http_as, "cancel me over http")
    wait_until(lambda: stack.sim.state.calls_matching("cancel me over http"), what="the call")

    stranger = http_as(BOB).post(f"/v1/jobs/{job_id}/cancel")
    assert stranger.status_code == 404 and stranger.json()["error"]["code"] == "job_not_found"
    assert http_as(ALICE).post("/v1/jobs/no-such-job/cancel").status_code == 404

    asked = time.time()
    answer = http_as(ALICE).post(f"/v1/jobs/{job_id}/cancel")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "object": "job.cancel", "id": job_id, "status": "cancelled", "in_flight": True,
    }  # fmt: skip

    def cancelled() -> dict[str, Any] | None:
        body: dict[str, Any] = http_as(ALICE).get(f"/v1/jobs/{job_id}").json()
        return body if body["status"] == "cancelled" else None

    record = wait_until(cancelled, timeout_s=60, what="the cancelled record")
    assert record["output"] is None
    [call] = stack.sim.state.calls_matching("cancel me over http")
    assert call.client_gone_at is not None and call.client_gone_at - asked < 2.0
    again = http_as(ALICE).post(f"/v1/jobs/{job_id}/cancel").json()
    assert again["status"] == "cancelled" and "in_flight" not in again  # idempotent


def test_a_finished_job_answers_already_finished(stack: Stack, http_as: HttpAs) -> None:
    job_id = _submit(http_as, "finish me first")

    def done() -> bool:
        return bool(http_as(ALICE).get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded")

    wait_until(done, what="the job to finish")
    answer = http_as(ALICE).post(f"/v1/jobs/{job_id}/cancel").json()
    assert answer["status"] == "already_finished" and answer["job_status"] == "succeeded"
    assert http_as(ALICE).get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"


def test_cli_one_json_object_per_id_and_exit_2_for_a_malformed_one(
    stack: Stack, http_as: HttpAs, tmp_path: Any
) -> None:
    job_id = _submit(http_as, "the cli knows this one")
    wait_until(
        lambda: http_as(ALICE).get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded",
        what="the job to finish",
    )
    proc = mimoq("cancel", job_id, "nobody", env=stack.env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines == [
        {"id": job_id, "status": "already_finished", "job_status": "succeeded"},
        {"id": "nobody", "status": "not_found"},
    ]
    bad = mimoq("cancel", "nobody", "../etc/passwd", env=stack.env, cwd=tmp_path)
    assert bad.returncode == 2
    statuses = [json.loads(line)["status"] for line in bad.stdout.splitlines()]
    assert statuses == ["not_found", "invalid"]
    assert "A-Z a-z 0-9" in bad.stdout
    tenant = mimoq("cancel", "--tenant", "bad tenant!", env=stack.env, cwd=tmp_path)
    assert tenant.returncode == 2 and "tenant must be" in tenant.stderr


def test_a_cancelled_job_answers_409_job_cancelled_to_its_waiter_and_its_content(
    stack: Stack, http_as: HttpAs
) -> None:
    """Not 502 ``job_failed``: nothing failed upstream, the caller's side withdrew the job."""
    text = "cancel me while a request waits"
    stack.sim.state.add_fault(Fault(kind="latency", ms=6_000, match=text))
    key = f"cancel-409-{time.time_ns()}"
    # The key makes the waiting request's job id known in advance (the same for its retries).
    job_id = request_job_id(key, tenant="alice", route="speech")
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            http_as(ALICE).post,
            "/v1/audio/speech",
            json={"model": "tts-1", "input": text, "voice": "Mia"},
            headers={"Idempotency-Key": key},
        )
        wait_until(lambda: stack.sim.state.calls_matching(text), what="the call")
        assert http_as(ALICE).post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
        answer = waiting.result(timeout=60)
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"]["code"] == "job_cancelled"
    assert answer.json()["error"]["type"] == "cancelled"
    content = http_as(ALICE).get(f"/v1/jobs/{job_id}/content")
    assert content.status_code == 409 and content.json()["error"]["code"] == "job_cancelled"
