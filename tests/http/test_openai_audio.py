"""The official openai package, unchanged, against `mimoq serve` + a worker + the simulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.http.conftest import ALICE, BOB, UNNAMED, HttpAs, Stack, wav_bytes
from tests.support.polling import wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def oai(stack: Stack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=stack.v1, api_key=ALICE, max_retries=0, timeout=120) as c:
        yield c


def test_speech_returns_wav_from_the_queue(stack: Stack, oai: openai.OpenAI) -> None:
    audio = oai.audio.speech.create(
        model="tts-1", voice="Mia", input="Hello from the front door.", response_format="wav"
    )
    data = audio.read()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert audio.response.headers["content-type"] == "audio/wav"
    assert len(data) > 1000


def test_streaming_speech_pcm(stack: Stack, oai: openai.OpenAI, tmp_path: Path) -> None:
    out = tmp_path / "out.pcm"
    with oai.audio.speech.with_streaming_response.create(
        model="mimo-v2.5-tts", voice="Chloe", input="Streamed back.", response_format="pcm"
    ) as response:
        assert response.headers["content-type"] == "audio/pcm"
        response.stream_to_file(out)
    data = out.read_bytes()
    assert len(data) > 1000 and len(data) % 2 == 0  # 16-bit samples, no header
    assert not data.startswith(b"RIFF")


def test_transcription_json_and_text(stack: Stack, oai: openai.OpenAI, tmp_path: Path) -> None:
    recording = tmp_path / "meeting.wav"
    recording.write_bytes(wav_bytes(1.0))
    with recording.open("rb") as f:
        result = oai.audio.transcriptions.create(model="whisper-1", file=f, language="en")
    assert isinstance(result.text, str) and result.text.strip()
    with recording.open("rb") as f:
        text = oai.audio.transcriptions.create(
            model="mimo-v2.5-asr", file=f, response_format="text"
        )
    assert isinstance(text, str) and text.strip()
    # The upload is deleted once the job has its result; nothing else is left in uploads/.
    assert list((stack.data_dir / "uploads").glob("*")) == []


def test_upload_without_a_filename_extension_is_recognised(
    stack: Stack, oai: openai.OpenAI
) -> None:
    result = oai.audio.transcriptions.create(
        model="whisper-1", file=("recording", wav_bytes(0.5), "application/octet-stream")
    )
    assert result.text.strip()


def test_async_mode_location_status_and_content(
    stack: Stack, oai: openai.OpenAI, http_as: HttpAs
) -> None:
    http = http_as(ALICE)
    answer = http.post(
        "/v1/audio/speech",
        json={
            "model": "tts-1",
            "input": "Later, please.",
            "voice": "Dean",
            "metadata": {"order": 7},
        },
        headers={"Prefer": "respond-async, wait=5"},
    )
    assert answer.status_code == 202
    job_id = answer.json()["id"]
    assert answer.headers["location"] == f"/v1/jobs/{job_id}"
    assert answer.headers["preference-applied"] == "respond-async"

    def finished() -> dict[str, object] | None:
        body = http.get(answer.headers["location"]).json()
        return body if body["status"] in ("succeeded", "failed") else None

    record = wait_until(finished, what="the async job to finish")
    assert isinstance(record, dict)
    assert record["status"] == "succeeded" and record["metadata"] == {"order": 7}
    assert "path" not in record["output"]  # the server's own paths are not shown
    assert record["output"]["url"] == f"/v1/jobs/{job_id}/content"
    content = http.get(record["output"]["url"])
    assert content.status_code == 200 and content.content[:4] == b"RIFF"
    assert content.headers["content-type"] == "audio/wav"

    # The openai package sends the same preference through extra_headers.
    raw = oai.audio.speech.with_raw_response.create(
        model="tts-1",
        voice="Mia",
        input="Async via openai.",
        extra_headers={"Prefer": "respond-async"},
    )
    assert raw.status_code == 202 and raw.headers["location"].startswith("/v1/jobs/")


def test_async_transcription(stack: Stack, http_as: HttpAs) -> None:
    http = http_as(UNNAMED)
    answer = http.post(
        "/v1/audio/transcriptions",
        files={"file": ("a.wav", wav_bytes(0.5), "audio/wav")},
        data={"model": "whisper-1", "response_format": "text", "metadata": json.dumps({"k": 1})},
        headers={"Prefer": "respond-async"},
    )
    assert answer.status_code == 202, answer.text
    location = answer.headers["location"]
    wait_until(lambda: http.get(location).json()["status"] == "succeeded", what="transcription")
    content = http.get(location + "/content")
    assert content.headers["content-type"].startswith("text/plain")
    assert content.text.strip()
    # The job is done, so the sweep removes its upload (the request itself did not wait).
    job_id = answer.json()["id"]
    wait_until(
        lambda: not list((stack.data_dir / "uploads").glob(f"{job_id}*")), what="upload sweep"
    )


def test_other_tenants_jobs_are_not_found(stack: Stack, http_as: HttpAs) -> None:
    alice, bob = http_as(ALICE), http_as(BOB)
    job_id = alice.post(
        "/v1/audio/speech",
        json={"input": "Mine.", "voice": "Mia"},
        headers={"Prefer": "respond-async"},
    ).json()["id"]
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/content"):
        answer = bob.get(path)
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "job_not_found"
    # Same answer as for an id nobody has: existence is not revealed.
    assert bob.get("/v1/jobs/no-such-job").json()["error"]["message"] == "no job 'no-such-job'"
    assert alice.get(f"/v1/jobs/{job_id}").status_code == 200


def test_idempotency_key_makes_a_retried_request_the_same_job(
    stack: Stack, http_as: HttpAs
) -> None:
    def asr_calls() -> int:
        return int(stack.sim.state.stats()["requests"].get("mimo-v2.5-asr", 0))

    alice, bob = http_as(ALICE), http_as(BOB)
    body = {"input": "Only once.", "voice": "Mia"}
    later = {"Prefer": "respond-async", "Idempotency-Key": "order-42"}
    first = alice.post("/v1/audio/speech", json=body, headers=later).json()["id"]
    again = alice.post("/v1/audio/speech", json=body, headers=later).json()["id"]
    assert first == again
    assert (
        bob.post("/v1/audio/speech", json=body, headers=later).json()["id"] != first
    )  # per tenant

    before = asr_calls()
    upload = {"file": ("a.wav", wav_bytes(0.4), "audio/wav")}
    key = {"Idempotency-Key": "upload-7"}
    one = alice.post(
        "/v1/audio/transcriptions", files=upload, data={"model": "whisper-1"}, headers=key
    )
    two = alice.post(
        "/v1/audio/transcriptions", files=upload, data={"model": "whisper-1"}, headers=key
    )
    assert one.status_code == two.status_code == 200 and one.json() == two.json()
    assert asr_calls() - before == 1  # the repeat was answered from the first job
    bad = alice.post("/v1/audio/speech", json=body, headers={"Idempotency-Key": "has space"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "Idempotency-Key"


def test_transcription_segments_and_captions(
    stack: Stack, oai: openai.OpenAI, tmp_path: Path
) -> None:
    from mimoq.core.audio import WavFormat
    from tests.batch.helpers import tones
    from tests.batch.helpers import wav_bytes as tone_wav

    # Two 1 s stretches of sound, 1.5 s apart: two segments, at 0-1 s and 2.5-3.5 s.
    recording = tmp_path / "two.wav"
    recording.write_bytes(
        tone_wav(tones(16_000, [(1.0, 1.5), (1.0, 0.2)]), WavFormat(16_000, 1, 16))
    )
    with recording.open("rb") as f:
        result = oai.audio.transcriptions.create(
            model="whisper-1", file=f, extra_body={"timestamps": "segment"}
        )
    segments = result.to_dict()["segments"]
    assert [(s["start"], s["end"]) for s in segments] == [(0.0, 1.0), (2.5, 3.5)]
    assert result.text.strip()
    with recording.open("rb") as f:
        srt = oai.audio.transcriptions.create(
            model="whisper-1", file=f, response_format="srt", extra_body={"timestamps": "segment"}
        )
    assert isinstance(srt, str)
    assert "1\n00:00:00,000 --> 00:00:01,000\n" in srt
    assert "2\n00:00:02,500 --> 00:00:03,500\n" in srt
    with recording.open("rb") as f, pytest.raises(openai.BadRequestError) as refused:
        oai.audio.transcriptions.create(model="whisper-1", file=f, response_format="vtt")
    assert "needs timestamps: 'segment'" in str(refused.value)
    # Asynchronously, the caption file is served with its own type.
    with recording.open("rb") as f:
        later = oai.audio.transcriptions.with_raw_response.create(
            model="whisper-1", file=f, response_format="vtt",
            extra_body={"timestamps": "segment"}, extra_headers={"Prefer": "respond-async"},
        )  # fmt: skip
    location = later.headers["location"]
    with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {ALICE}"}) as http:
        wait_until(lambda: http.get(location).json()["status"] == "succeeded", what="captions")
        vtt = http.get(location + "/content")
    assert vtt.status_code == 200 and vtt.headers["content-type"].startswith("text/vtt")
    assert vtt.text.startswith("WEBVTT")
