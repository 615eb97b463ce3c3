"""The OpenAI Batch API (files + batches) with the official openai package, unchanged."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from mimoq.core import wire
from mimoq.sim.faults import Fault
from tests.http.conftest import ALICE, BOB, Stack, wav_bytes
from tests.support.polling import wait_until
from tests.support.receiver import Receiver

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def oai(stack: Stack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=stack.v1, api_key=ALICE, max_retries=0, timeout=120) as c:
        yield c


def jsonl(rows: list[dict[str, object]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def run_batch(
    oai: openai.OpenAI, rows: list[dict[str, object]], endpoint: str
) -> openai.types.Batch:
    upload = oai.files.create(file=("requests.jsonl", io.BytesIO(jsonl(rows))), purpose="batch")
    assert upload.purpose == "batch" and upload.bytes == len(jsonl(rows))
    batch = oai.batches.create(input_file_id=upload.id, endpoint=endpoint, completion_window="24h")  # type: ignore[arg-type]
    assert batch.status == "validating"  # answered at once; the lines are enqueued after

    def done() -> openai.types.Batch | None:
        got = oai.batches.retrieve(batch.id)
        return got if got.status in ("completed", "failed", "cancelled") else None

    finished = wait_until(done, what=f"batch {batch.id}")
    assert isinstance(finished, openai.types.Batch)
    return finished


def lines_of(oai: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, object]]:
    assert file_id is not None
    text = oai.files.content(file_id).text
    return {row["custom_id"]: row for row in map(json.loads, text.splitlines())}


def test_speech_batch_with_good_bad_and_failing_lines(stack: Stack, oai: openai.OpenAI) -> None:
    stack.sim.state.add_fault(
        Fault.model_validate({"kind": "status", "status": 400, "match": "Upstream says no"})
    )
    rows: list[dict[str, object]] = [
        {"custom_id": f"ok-{i}", "method": "POST", "url": "/v1/audio/speech",
         "body": {"model": "tts-1", "input": f"Chapter {i}.", "voice": "Mia"}}
        for i in range(5)
    ]  # fmt: skip
    rows.append({"custom_id": "design", "method": "POST", "url": "/v1/audio/speech",
                 "body": {"model": "mimo-v2.5-tts-voicedesign", "input": "Hi.", "instructions": "deep"}})  # fmt: skip
    rows.append({"custom_id": "alloy", "method": "POST", "url": "/v1/audio/speech",
                 "body": {"model": "tts-1", "input": "Hi.", "voice": "alloy"}})  # fmt: skip
    rows.append({"custom_id": "upstream", "method": "POST", "url": "/v1/audio/speech",
                 "body": {"input": "Upstream says no.", "voice": "Mia"}})  # fmt: skip
    batch = run_batch(oai, rows, "/v1/audio/speech")
    assert batch.status == "completed"
    assert batch.request_counts is not None
    assert (
        batch.request_counts.total,
        batch.request_counts.completed,
        batch.request_counts.failed,
    ) == (8, 6, 2)

    output = lines_of(oai, batch.output_file_id)
    assert set(output) == {"ok-0", "ok-1", "ok-2", "ok-3", "ok-4", "design"}
    response = output["ok-3"]["response"]
    assert isinstance(response, dict) and response["status_code"] == 200
    url = response["body"]["url"]
    audio = httpx.get(stack.url + url, headers={"Authorization": f"Bearer {ALICE}"})
    assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
    assert httpx.get(stack.url + url, headers={"Authorization": f"Bearer {BOB}"}).status_code == 404

    errors = lines_of(oai, batch.error_file_id)
    assert set(errors) == {"alloy", "upstream"}
    refused = errors["alloy"]["response"]
    assert isinstance(refused, dict) and refused["status_code"] == 400
    assert (
        refused["body"]["error"]["param"] == "voice"
        and "alloy" in refused["body"]["error"]["message"]
    )
    failed = errors["upstream"]["response"]
    assert isinstance(failed, dict) and failed["body"]["error"]["code"] == "job_failed"

    # the batch is a run: Redis counts its 8 lines as request_counts do (the refused one as
    # failed), it was sealed and has ended, and each result names it
    with stack.redis() as r:
        run: dict[bytes, bytes] = r.hgetall(f"mimoq:run:{batch.id}")  # type: ignore[assignment]
        assert (run[b"total"], run[b"succeeded"], run[b"failed"]) == (b"8", b"6", b"2")
        assert b"sealed" in run and b"ended_at" in run and run[b"priority"] == b"bulk"
        assert not r.exists(f"mimoq:run:{batch.id}:pending")
        assert r.zscore("mimoq:runs", batch.id) is None
        result = json.loads(r.get(f"mimoq:result:{batch.id}-000004"))  # type: ignore[arg-type]
        assert result["run"] == batch.id


def test_transcription_batch_with_data_uris(stack: Stack, oai: openai.OpenAI) -> None:
    uri = "data:audio/wav;base64," + base64.b64encode(wav_bytes(0.4)).decode()
    rows: list[dict[str, object]] = [
        {"custom_id": "a", "method": "POST", "url": "/v1/audio/transcriptions",
         "body": {"model": "whisper-1", "file": uri, "language": "en"}},
        {"custom_id": "path", "method": "POST", "url": "/v1/audio/transcriptions",
         "body": {"model": "whisper-1", "file": "/etc/passwd.wav"}},
    ]  # fmt: skip
    batch = run_batch(oai, rows, "/v1/audio/transcriptions")
    output = lines_of(oai, batch.output_file_id)
    body = output["a"]["response"]["body"]  # type: ignore[index]
    assert isinstance(body["text"], str) and body["text"].strip()
    errors = lines_of(oai, batch.error_file_id)
    assert errors["path"]["response"]["body"]["error"]["param"] == "file"  # type: ignore[index]


def test_malformed_input_file_fails_the_batch(stack: Stack, oai: openai.OpenAI) -> None:
    raw = (
        b'{"custom_id": "x", "url": "/v1/audio/speech", "body": {"input": "hi"}}\n'
        b"not json\n"
        b'{"custom_id": "x", "url": "/v1/audio/speech", "body": {"input": "hi"}}\n'
        b'{"custom_id": "y", "url": "/v1/chat/completions", "body": {}}\n'
    )
    upload = oai.files.create(file=("bad.jsonl", io.BytesIO(raw)), purpose="batch")
    created = oai.batches.create(
        input_file_id=upload.id, endpoint="/v1/audio/speech", completion_window="24h"
    )  # type: ignore[arg-type]
    batch = wait_until(
        lambda: (b := oai.batches.retrieve(created.id)).status != "validating" and b,
        what="validation",
    )
    assert isinstance(batch, openai.types.Batch)
    assert batch.status == "failed" and batch.errors is not None and batch.errors.data is not None
    assert [e.line for e in batch.errors.data] == [2, 3, 4]
    with pytest.raises(openai.BadRequestError) as refused:
        oai.batches.create(
            input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h"
        )
    assert isinstance(refused.value.body, dict) and refused.value.body["param"] == "endpoint"
    with pytest.raises(openai.BadRequestError):
        oai.files.create(file=("x.jsonl", io.BytesIO(raw)), purpose="fine-tune")
    # Another tenant sees neither the file nor the batch.
    with openai.OpenAI(base_url=stack.v1, api_key=BOB, max_retries=0) as bob:
        with pytest.raises(openai.NotFoundError):
            bob.files.content(upload.id)
        with pytest.raises(openai.NotFoundError):
            bob.batches.retrieve(batch.id)
        with pytest.raises(openai.NotFoundError):
            bob.batches.create(
                input_file_id=upload.id, endpoint="/v1/audio/speech", completion_window="24h"
            )  # type: ignore[arg-type]


def test_cancel_withdraws_queued_requests(stack: Stack, oai: openai.OpenAI) -> None:
    stack.sim.state.add_fault(
        Fault.model_validate({"kind": "latency", "ms": 1500, "times": None, "match": "slow-batch"})
    )
    try:
        rows: list[dict[str, object]] = [
            {"custom_id": f"r{i}", "method": "POST", "url": "/v1/audio/speech",
             "body": {"input": f"slow-batch {i}.", "voice": "Mia"}}
            for i in range(80)
        ]  # fmt: skip
        upload = oai.files.create(file=("slow.jsonl", io.BytesIO(jsonl(rows))), purpose="batch")
        batch = oai.batches.create(
            input_file_id=upload.id, endpoint="/v1/audio/speech", completion_window="24h"
        )  # type: ignore[arg-type]
        # Batch requests run in the bulk lane, as the tenant whose token sent them.
        # (job ids are the batch's and the line number: the 80th line is the last)
        queued = wait_until(lambda: stack.redis().get(f"arq:job:{batch.id}-000080"), what="line 80")
        assert isinstance(queued, bytes)
        job = json.loads(queued)["k"]["job"]
        assert (job["priority"], job["tenant"]) == ("bulk", "alice")
        # While it runs, the batch says when it expects to be done (its run's ETA)
        running = wait_until(
            lambda: (b := oai.batches.retrieve(batch.id)).status == "in_progress" and b,
            what="in progress",
        )
        assert isinstance(running, openai.types.Batch) and running.model_extra is not None
        expected = running.model_extra["expected_completion_at"]
        assert isinstance(expected, int) and time.time() - 1 <= expected <= time.time() + 3600
        cancelling = oai.batches.cancel(batch.id)
        assert cancelling.status in ("cancelling", "cancelled")
        final = wait_until(
            lambda: (b := oai.batches.retrieve(batch.id)).status == "cancelled" and b,
            what="cancelled",
        )
        assert isinstance(final, openai.types.Batch) and final.request_counts is not None
        assert final.request_counts.completed < 80
        assert final.model_extra is not None
        assert final.model_extra["expected_completion_at"] == final.cancelled_at
        errors = lines_of(oai, final.error_file_id)
        not_run = [
            r for r in errors.values() if r["error"] and r["error"]["code"] == "batch_cancelled"
        ]  # type: ignore[index]
        assert len(not_run) == 80 - final.request_counts.completed - final.request_counts.failed
        assert not_run
        with pytest.raises(openai.ConflictError):
            oai.batches.cancel(batch.id)
    finally:
        stack.sim.state.clear_faults()


def test_transcription_batch_fetches_audio_urls_safely(stack: Stack, oai: openai.OpenAI) -> None:
    from tests.support.receiver import Receiver, Response

    answers = {
        "fetched": Response(200, {"Content-Type": "audio/wav"}, wav_bytes(0.5)),
        "missing": Response(404, body=b"gone"),
        "redirected": Response(302, {"Location": "http://10.0.0.1/x.wav"}),
    }
    with contextlib.ExitStack() as hosts:
        rows: list[dict[str, object]] = []
        for name, answer in answers.items():
            # One loopback host per answer (fetches run concurrently; loopback is allowed here).
            host = hosts.enter_context(Receiver())
            host.respond(answer)
            rows.append({"custom_id": name, "method": "POST", "url": "/v1/audio/transcriptions",
                         "body": {"model": "whisper-1", "file": host.url(f"/{name}.wav")}})  # fmt: skip
        rows.append({"custom_id": "private", "method": "POST", "url": "/v1/audio/transcriptions",
                     "body": {"model": "whisper-1", "file": "http://169.254.169.254/latest/meta-data.wav"}})  # fmt: skip
        batch = run_batch(oai, rows, "/v1/audio/transcriptions")
    output = lines_of(oai, batch.output_file_id)
    assert output["fetched"]["response"]["body"]["text"].strip()  # type: ignore[index]
    errors = lines_of(oai, batch.error_file_id)
    assert set(errors) == {"missing", "redirected", "private"}
    assert "answered 404" in errors["missing"]["response"]["body"]["error"]["message"]  # type: ignore[index]
    assert "answered 302" in errors["redirected"]["response"]["body"]["error"]["message"]  # type: ignore[index]
    private = errors["private"]["response"]["body"]["error"]  # type: ignore[index]
    assert private["param"] == "file" and "169.254.169.254" in private["message"]


def test_cancel_right_after_create_accounts_for_every_line(
    stack: Stack, oai: openai.OpenAI
) -> None:
    stack.sim.state.add_fault(
        Fault.model_validate(
            {"kind": "latency", "ms": 1000, "times": None, "match": "early-cancel"}
        )
    )
    try:
        rows: list[dict[str, object]] = [
            {"custom_id": f"e{i}", "method": "POST", "url": "/v1/audio/speech",
             "body": {"input": f"early-cancel {i}.", "voice": "Mia"}}
            for i in range(300)
        ]  # fmt: skip
        upload = oai.files.create(file=("early.jsonl", io.BytesIO(jsonl(rows))), purpose="batch")
        batch = oai.batches.create(
            input_file_id=upload.id, endpoint="/v1/audio/speech", completion_window="24h"
        )  # type: ignore[arg-type]
        oai.batches.cancel(batch.id)  # most likely while its lines are still being enqueued
        final = wait_until(
            lambda: (b := oai.batches.retrieve(batch.id)).status == "cancelled" and b,
            what="cancelled",
        )
        assert isinstance(final, openai.types.Batch) and final.request_counts is not None
        counts = final.request_counts
        assert counts.total == 300
        errors = lines_of(oai, final.error_file_id)
        not_run = sum(
            1 for r in errors.values() if r["error"] and r["error"]["code"] == "batch_cancelled"
        )  # type: ignore[index]
        assert counts.completed + counts.failed + not_run == 300
        assert not_run > 0
        # Nothing of it is left in the queue.
        queue = stack.redis().zrange("mimoq:queue", 0, -1)
        assert not [m for m in queue if m.decode().startswith(batch.id)]
    finally:
        stack.sim.state.clear_faults()


def test_a_batch_with_a_callback_gets_one_batch_completed_event(
    stack: Stack, oai: openai.OpenAI
) -> None:
    rows: list[dict[str, object]] = [
        {"custom_id": f"e{i}", "method": "POST", "url": "/v1/audio/speech",
         "body": {"input": f"Event {i}.", "voice": "Mia"}}
        for i in range(6)
    ]  # fmt: skip
    rows.append({"custom_id": "bad", "method": "POST", "url": "/v1/audio/speech",
                 "body": {"input": "Hi.", "voice": "alloy"}})  # fmt: skip
    with Receiver() as receiver:
        upload = oai.files.create(file=("ev.jsonl", io.BytesIO(jsonl(rows))), purpose="batch")
        hook = {"url": receiver.url("/batches"), "headers": {"X-Team": "audio"}}
        batch = oai.batches.create(
            input_file_id=upload.id,
            endpoint="/v1/audio/speech",
            completion_window="24h",
            extra_body={"callback": hook},
        )  # type: ignore[arg-type]
        assert "callback" not in (batch.model_extra or {})  # its headers may hold secrets
        (event,) = receiver.wait_for(1, timeout=60)
        done = wait_until(
            lambda: (b := oai.batches.retrieve(batch.id)).status == "completed" and b,
            what="completed",
        )
        assert isinstance(done, openai.types.Batch)
        body = event.json()
        assert event.headers["webhook-id"] == f"cb-run:{batch.id}"
        assert event.headers["x-team"] == "audio" and event.path == "/batches"
        assert (body["type"], body["run"], body["status"]) == ("batch.completed", batch.id,
                                                               "completed")  # fmt: skip
        # the refused line never became a job: it counts as failed
        assert (body["total"], body["succeeded"], body["failed"], body["cancelled"]) == (7, 6, 1, 0)
        assert body["tenant"] == "alice"
        # one delivery, delivered once, and nothing more of it queued
        with stack.redis() as r:
            record = wait_until(
                lambda: (
                    (raw := r.get(f"mimoq:delivery:cb-run:{batch.id}"))
                    and json.loads(raw)["history"]
                    and json.loads(raw)
                ),  # type: ignore[arg-type]
                what="the delivery's history",
            )
            assert isinstance(record, dict)
            assert [a["outcome"] for a in record["history"]] == ["delivered"]
            # the delivery job writes its record before arq finishes it (and drops its key)
            wait_until(
                lambda: not r.exists(f"arq:job:cb-run:{batch.id}"), what="the delivery job's end"
            )
            assert r.zscore(wire.QUEUE_NAME, f"cb-run:{batch.id}") is None  # not queued again
        assert len(receiver.requests) == 1
    # a callback that is not a URL is refused, naming the field
    with pytest.raises(openai.BadRequestError) as refused:
        oai.batches.create(
            input_file_id=upload.id,
            endpoint="/v1/audio/speech",
            completion_window="24h",
            extra_body={"callback": {"url": "ftp://x"}},
        )  # type: ignore[arg-type]
    assert "callback" in str(refused.value)
