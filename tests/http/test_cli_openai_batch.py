"""`mimoq batch FILE.jsonl` reads OpenAI Batch lines and writes OpenAI's output format, the
same lines the HTTP front door's batches produce (embedded default: no Redis server)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from mimoq.sim.faults import Fault
from mimoq.sim.sim_server import RunningSim
from tests.http.conftest import API_KEY, wav_bytes
from tests.support.cli import clean_env, mimoq

pytestmark = [pytest.mark.slow]


def test_openai_batch_lines_through_the_cli(sim: RunningSim, tmp_path: Path) -> None:
    sim.state.add_fault(
        Fault.model_validate({"kind": "status", "status": 400, "match": "CLI upstream no"})
    )
    recording = tmp_path / "rec.wav"
    recording.write_bytes(wav_bytes(0.3))
    uri = "data:audio/wav;base64," + base64.b64encode(wav_bytes(0.3)).decode()
    rows = [
        {"custom_id": "hello", "method": "POST", "url": "/v1/audio/speech",
         "body": {"model": "tts-1", "input": "Hello.", "voice": "Mia"}},
        {"custom_id": "local-file", "url": "/v1/audio/transcriptions",
         "body": {"model": "whisper-1", "file": "rec.wav"}},  # relative to the manifest, as for jobs
        {"custom_id": "inline", "url": "/v1/audio/transcriptions",
         "body": {"model": "whisper-1", "file": uri, "response_format": "text"}},
        {"custom_id": "alloy", "url": "/v1/audio/speech", "body": {"model": "tts-1", "input": "x", "voice": "alloy"}},
        {"custom_id": "no", "url": "/v1/audio/speech", "body": {"input": "CLI upstream no.", "voice": "Mia"}},
        {"custom_id": "chat", "url": "/v1/chat/completions", "body": {}},
    ]  # fmt: skip
    manifest = tmp_path / "requests.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = clean_env(
        MIMO_API_KEY=API_KEY, MIMO_BASE_URL=sim.url, MIMOQ_DATA_DIR=str(tmp_path / "data"),
        MIMOQ_LIMITS_ENABLED="false", MIMOQ_POLL_DELAY_S="0.01", MIMOQ_MAX_TRIES="2",
        MIMOQ_BACKOFF_BASE_S="0.01", MIMOQ_BACKOFF_MAX_S="0.05",
    )  # fmt: skip
    done = mimoq(
        "batch",
        str(manifest),
        "--output-format",
        "openai",
        "--progress",
        "none",
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr  # some requests failed, as they should
    run = next((tmp_path / "data" / "batches").iterdir())
    output = {
        r["custom_id"]: r for r in map(json.loads, (run / "output.jsonl").read_text().splitlines())
    }
    errors = {
        r["custom_id"]: r for r in map(json.loads, (run / "errors.jsonl").read_text().splitlines())
    }
    assert set(output) == {"hello", "local-file", "inline"}
    assert set(errors) == {"alloy", "no", "chat"}

    speech = output["hello"]["response"]
    assert speech["status_code"] == 200 and speech["body"]["url"].startswith("file:///")
    assert Path(speech["body"]["url"].removeprefix("file://")).read_bytes()[:4] == b"RIFF"
    assert output["local-file"]["response"]["body"]["text"].strip()
    assert output["inline"]["response"]["body"]["text"].strip()
    assert "alloy" in errors["alloy"]["error"]["message"]  # refused when planned: never ran
    assert errors["no"]["response"]["status_code"] == 400  # ran and failed upstream
    assert errors["no"]["response"]["body"]["error"]["code"] == "job_failed"
    assert "/v1/chat/completions" in errors["chat"]["error"]["message"]
    # The ordinary reports name the items by their custom_id.
    report = [json.loads(line) for line in (run / "report.jsonl").read_text().splitlines()]
    assert {r["input"] for r in report} == {r["custom_id"] for r in rows}
