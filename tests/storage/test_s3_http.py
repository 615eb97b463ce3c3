"""`mimoq serve` on one "machine", a worker on another, sharing only Redis and a real S3 store.

The server and the worker have different data directories: an upload reaches the worker
only through the bucket, and an output reaches the client only by being streamed out of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import obstore
import openai
import pytest

from mimoq.core.remote import object_location
from mimoq.sim.sim_server import RunningSim
from tests.conftest import RedisServer, free_port
from tests.e2e.conftest import API_KEY
from tests.http.conftest import (
    ALICE,
    TOKENS,
    start_server,
    start_worker,
    stop,
    wav_bytes,
)
from tests.support.cli import clean_env
from tests.support.polling import wait_until
from tests.support.seaweed import SeaweedS3

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _env(
    redis_server: RedisServer, sim: RunningSim, seaweed: SeaweedS3, data: Path, storage: str
) -> dict[str, str]:
    return clean_env(
        **seaweed.env(),
        REDIS_URL=redis_server.url,
        MIMO_API_KEY=API_KEY,
        MIMO_BASE_URL=sim.url,
        MIMOQ_DATA_DIR=str(data),
        MIMOQ_INPUT_ROOTS=str(data),
        MIMOQ_STORAGE_URL=storage,
        MIMOQ_POLL_DELAY_S="0.01",
        MIMOQ_LIMITS_ENABLED="false",
        MIMOQ_BACKOFF_BASE_S="0.01",
        MIMOQ_BACKOFF_MAX_S="0.05",
        MIMOQ_API_TOKENS=TOKENS,
    )


@pytest.fixture
def front_door(
    redis_server: RedisServer,
    sim: RunningSim,
    seaweed: SeaweedS3,
    bucket_url: str,
    tmp_path: Path,
) -> Iterator[str]:
    """`mimoq serve` in one folder and `mimoq worker` in another; yields the API base URL."""
    import redis as sync_redis

    sync_redis.Redis.from_url(redis_server.url).flushall()
    server_dir, worker_dir = tmp_path / "server", tmp_path / "worker"
    server_dir.mkdir()
    worker_dir.mkdir()
    port = free_port()
    worker = start_worker(
        _env(redis_server, sim, seaweed, worker_dir / "data", bucket_url), worker_dir
    )
    server = start_server(
        _env(redis_server, sim, seaweed, server_dir / "data", bucket_url), server_dir, port
    )
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(server)
        stop(worker)


def test_speech_and_transcription_cross_machines_through_the_bucket(
    front_door: str, bucket_url: str, tmp_path: Path
) -> None:
    with openai.OpenAI(base_url=front_door, api_key=ALICE, max_retries=0, timeout=120) as oai:
        audio = oai.audio.speech.create(
            model="tts-1", voice="Mia", input="Stored in a bucket.", response_format="wav"
        ).read()
        recording = tmp_path / "call.wav"
        recording.write_bytes(wav_bytes(1.0))
        with recording.open("rb") as f:
            transcript = oai.audio.transcriptions.create(model="whisper-1", file=f)
        with recording.open("rb") as f:
            queued = oai.audio.transcriptions.with_raw_response.create(
                model="whisper-1", file=f, extra_headers={"Prefer": "respond-async"}
            )
    assert audio[:4] == b"RIFF" and audio[8:12] == b"WAVE" and len(audio) > 1000
    assert transcript.text.strip()
    assert queued.status_code == 202

    # The worker wrote the WAV into the bucket, not next to the server: the server streamed
    # it out of the store. Its record names the object, and the object holds those bytes.
    store, prefix = object_location(bucket_url, None, "storage")
    keys = [m["path"] for page in obstore.list(store, prefix=prefix) for m in page]
    assert any(k.endswith(".wav") and "/inputs/" not in k for k in keys), keys
    # The upload crossed as a content-addressed input (the worker never saw the server's disk).
    assert any("/inputs/" in k for k in keys), keys
    assert not list((tmp_path / "server" / "data").rglob("*.wav"))
    assert not list((tmp_path / "worker" / "data").rglob("*.wav"))

    job_id = queued.headers["location"].rsplit("/", 1)[-1]
    headers = {"Authorization": f"Bearer {ALICE}"}
    with httpx.Client(base_url=front_door, headers=headers, timeout=60) as http:

        def finished() -> str | None:
            status = http.get(f"/jobs/{job_id}").json().get("status")
            return status if status in {"succeeded", "failed"} else None

        assert wait_until(finished, what="the async transcription") == "succeeded"
        content = http.get(f"/jobs/{job_id}/content")
    assert content.status_code == 200
    assert content.json()["text"].strip()
