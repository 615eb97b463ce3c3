"""Two "machines" sharing nothing but Redis and a real S3 server (SeaweedFS on loopback).

Each worker is its own process with its own data directory (and input root); the producer
lives in a third directory and uploads its inputs to the bucket first. Every output is
then read back from the producer's side by its URL, or with no credentials at all by its
presigned URL.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import obstore
import pytest
from arq.connections import ArqRedis

from mimoq.core.audio import WavFormat, wav_header
from mimoq.core.errors import InvalidRequestError
from mimoq.core.objstore import open_storage
from mimoq.core.remote import object_location
from mimoq.core.settings import Settings
from mimoq.producer.client import Producer
from mimoq.sim.sim_server import RunningSim
from tests.conftest import RedisServer, free_port
from tests.e2e.conftest import API_KEY, e2e_settings
from tests.e2e.test_pipeline import speech_wav
from tests.support.seaweed import SeaweedS3

pytestmark = [pytest.mark.redis, pytest.mark.slow]

_RUN_CLI = "import sys; from mimoq.cli import main; sys.exit(main(sys.argv[1:]))"
_FOREIGN_ENV = ("MIMO_", "MIMOQ_", "XIAOMI_", "REDIS_URL", "AWS_")


def _worker_env(
    redis_server: RedisServer, sim: RunningSim, seaweed: SeaweedS3, data: Path, storage: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_ENV)}
    env.update(seaweed.env())
    env.update({
        "REDIS_URL": redis_server.url, "MIMO_API_KEY": API_KEY, "MIMO_BASE_URL": sim.url,
        "MIMOQ_DATA_DIR": str(data), "MIMOQ_INPUT_ROOTS": str(data),
        "MIMOQ_STORAGE_URL": storage, "MIMOQ_PRESIGN_TTL_S": "600",
        "MIMOQ_POLL_DELAY_S": "0.01", "MIMOQ_METRICS_PORT": "0",
        "MIMOQ_BACKOFF_BASE_S": "0.01", "MIMOQ_BACKOFF_MAX_S": "0.05",
        "MIMOQ_LIMITS_ENABLED": "false", "MIMOQ_LOG_LEVEL": "INFO",
    })  # fmt: skip
    return env


class Machines:
    """Worker processes, each in its own directory; killed at the end of the test."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        home = Path(env["MIMOQ_DATA_DIR"]).parent
        home.mkdir(parents=True, exist_ok=True)
        log = self.tmp_path / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", _RUN_CLI, "worker"], env=env, cwd=home,
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.procs.append((proc, log))
        return proc

    def logs(self) -> str:
        return "\n".join(log.read_text(errors="replace")[-3000:] for _, log in self.procs)

    def stop(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(20)


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[Machines]:
    fleet = Machines(tmp_path)
    yield fleet
    fleet.stop()


def _read_url(url: str) -> bytes:
    store, path = object_location(url, None, "output")
    return bytes(obstore.get(store, path).bytes())


def _long_recording(path: Path, minutes: int) -> Path:
    """A tone with a one-second pause every minute: long enough to be split."""
    fmt = WavFormat(16_000, 1, 16)
    total = minutes * 60 * fmt.sample_rate
    with open(path, "wb") as f:
        f.write(wav_header(fmt, total * 2))
        for _minute in range(minutes):
            t = np.arange(60 * fmt.sample_rate) / fmt.sample_rate
            block = 0.3 * np.sin(2 * np.pi * 330 * t)
            block[t > 59] = 0.0
            f.write((block * 32767).astype("<i2").tobytes())
    return path


async def test_two_machines_share_outputs_through_s3(
    redis: ArqRedis, redis_server: RedisServer, sim: RunningSim, seaweed: SeaweedS3,
    bucket_url: str, machines: Machines, tmp_path: Path,
) -> None:  # fmt: skip
    for name in ("machine-a", "machine-b"):
        env = _worker_env(redis_server, sim, seaweed, tmp_path / name / "data", bucket_url)
        machines.start(env, name)
    producer_home = tmp_path / "producer"
    producer_home.mkdir()
    settings = e2e_settings(
        redis_server, sim, producer_home / "data", storage={"url": bucket_url, "input_roots": str(producer_home / "data")},
    )  # fmt: skip
    storage = open_storage(settings)
    producer = Producer(redis, settings, storage)
    words = [f"recording number {n}" for n in range(3)]
    recordings = [speech_wav(producer_home / f"rec{n}.wav", w) for n, w in enumerate(words)]
    sample = speech_wav(producer_home / "voice.wav", "my voice", seconds=2.0)
    long_one = _long_recording(producer_home / "long.wav", 6)  # ~11.5 MB: split in chunks
    jobs: list[dict[str, Any]] = [
        *({"kind": "transcription", "file": str(r), "response_format": "text"} for r in recordings),
        {"kind": "transcription", "file": str(long_one), "id": "long-one"},
        {"kind": "speech", "input": "From machine to bucket.", "model": "mimo-v2.5-tts"},
        {"kind": "speech", "input": "Raw samples.", "response_format": "pcm"},
        {"kind": "speech", "input": "Designed.", "model": "mimo-v2.5-tts-voicedesign",
         "instructions": "a calm voice"},
        {"kind": "speech", "input": "Cloned.", "model": "mimo-v2.5-tts-voiceclone",
         "voice": str(sample)},
    ]  # fmt: skip
    enqueued = [await producer.enqueue(job) for job in jobs]
    staged = [o["path"] for o in obstore.list(storage.store, prefix="fleet/inputs/").collect()]
    assert len(staged) == len(recordings) + 2  # every local input went to the bucket first
    try:
        results = await asyncio.gather(*(producer.wait(e.job_id, timeout_s=180) for e in enqueued))
    except TimeoutError:
        pytest.fail(f"jobs did not finish; worker logs:\n{machines.logs()}")
    for job, result in zip(jobs, results, strict=True):
        assert result.status == "succeeded", (job, result.error, machines.logs())
        output = result.output
        assert output is not None and output.url is not None
        assert output.url.startswith(bucket_url + "/")
        assert output.path == output.url  # no path on any one machine's disk
        data = _read_url(output.url)
        assert len(data) == output.bytes
        assert output.presigned_url is not None
        # A receiver with no credentials at all downloads it.
        plain = httpx.get(output.presigned_url, timeout=30)
        assert plain.status_code == 200 and plain.content == data
        if job["kind"] == "speech" and job.get("response_format") != "pcm":
            with wave.open(io.BytesIO(data)) as w:
                assert w.getnframes() > 0
                assert abs(w.getnframes() / w.getframerate() - output.duration_s) < 0.01
    assert [r.text for r in results[:3]] == words
    # `mimoq fetch` from the producer's machine: it has no worker's disk, only the bucket.
    env = _worker_env(redis_server, sim, seaweed, producer_home / "data", bucket_url)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    speech = results[4]
    fetched = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", _RUN_CLI, "fetch", speech.id, "--out", "got.wav"],
        env=env, cwd=producer_home, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr
    assert (producer_home / "got.wav").read_bytes() == _read_url(str(speech.output.url))  # type: ignore[union-attr]
    gone = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", _RUN_CLI, "fetch", "no-such-job"],
        env=env, cwd=producer_home, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert gone.returncode == 1 and "no-such-job has no result" in gone.stderr
    assert results[3].text and "[audio" in results[3].text  # the long one, stitched
    chunks = list(obstore.list(storage.store, prefix="fleet/chunks/").collect())
    assert chunks == []  # chunk objects are removed once stitched


async def test_https_input_at_loopback_is_refused_unless_allowed(
    redis: ArqRedis, redis_server: RedisServer, sim: RunningSim, seaweed: SeaweedS3,
    bucket_url: str, tmp_path: Path,
) -> None:  # fmt: skip
    """The presigned URL of an uploaded recording, as an https-style input: loopback is
    refused by the SSRF policy; with 127.0.0.0/8 allowed the worker fetches it."""
    from tests.e2e.conftest import running_worker

    settings = e2e_settings(
        redis_server, sim, tmp_path / "data", storage={"url": bucket_url, "presign_ttl_s": 600}, callbacks={"allow_networks": ""},
    )  # fmt: skip
    storage = open_storage(settings)
    (tmp_path / "data").mkdir(parents=True)
    wav = speech_wav(tmp_path / "data" / "in.wav", "fetched over http")
    with open(wav, "rb") as f:
        storage.put_file("inputs/in.wav", f)
    url = await storage.presign("inputs/in.wav", 600)
    assert url is not None and url.startswith("http://127.0.0.1")
    producer = Producer(redis, settings)
    async with running_worker(settings):
        refused = await producer.wait(
            (await producer.enqueue({"kind": "transcription", "file": url})).job_id, timeout_s=60
        )
    assert refused.status == "failed" and refused.error is not None
    assert refused.error["type"] == "invalid_request_error" and refused.error["param"] == "file"
    assert "loopback" in refused.error["message"] and "X-Amz" not in refused.error["message"]
    allowed = e2e_settings(
        redis_server, sim, tmp_path / "data", storage={"url": bucket_url, "presign_ttl_s": 600}, callbacks={"allow_networks": "127.0.0.0/8"},
    )  # fmt: skip
    async with running_worker(allowed):
        done = await Producer(redis, allowed).wait(
            (await producer.enqueue({"kind": "transcription", "file": url})).job_id, timeout_s=60
        )
    assert done.status == "succeeded", done.error
    assert done.text == "fetched over http"


async def test_object_inputs_that_do_not_exist_fail_cleanly(
    redis: ArqRedis, redis_server: RedisServer, sim: RunningSim, bucket_url: str, tmp_path: Path
) -> None:
    from tests.e2e.conftest import running_worker

    settings = e2e_settings(redis_server, sim, tmp_path / "data", storage={"url": bucket_url})
    producer = Producer(redis, settings)
    async with running_worker(settings):
        missing = await producer.wait(
            (await producer.enqueue(
                {"kind": "transcription", "file": f"{bucket_url}/inputs/nope.wav"}
            )).job_id, timeout_s=60,
        )  # fmt: skip
    assert missing.status == "failed" and missing.error is not None
    assert missing.error["type"] == "invalid_request_error"
    assert "does not exist" in missing.error["message"]


def test_storage_url_is_checked_at_start_up() -> None:
    with pytest.raises(Exception, match="MIMOQ_STORAGE_URL must be"):
        Settings(storage={"url": "ftp://example.com/x"})
    assert free_port() > 0  # the helper the fixtures rely on still works
    with pytest.raises(InvalidRequestError):
        object_location("memory://elsewhere/x.wav", None, "file")


async def test_a_worker_killed_mid_upload_leaves_no_partial_object_and_the_rerun_makes_it(
    redis: ArqRedis, redis_server: RedisServer, sim: RunningSim, seaweed: SeaweedS3,
    bucket_url: str, machines: Machines, tmp_path: Path,
) -> None:  # fmt: skip
    from mimoq.sim.faults import Fault, FaultKind
    from tests.support.tcp_proxy import FreezingProxy

    settings = e2e_settings(redis_server, sim, tmp_path / "producer", storage={"url": bucket_url})
    storage = open_storage(settings)
    # 16 MiB of audio: four 5 MiB parts; the relay to S3 freezes inside the second one.
    sim.state.add_fault(Fault(kind=FaultKind.AUDIO_BYTES, audio_bytes=16 << 20, match="kill me"))
    host, port = seaweed.endpoint.removeprefix("http://").split(":")
    with FreezingProxy(host, int(port), freeze_after=7 << 20) as proxy:
        env = _worker_env(redis_server, sim, seaweed, tmp_path / "machine-a" / "data", bucket_url)
        # A fast heartbeat: machine-b re-queues the dead worker's job once its heartbeat
        # lapses (1.5 s) instead of waiting for arq's in-progress key (job timeout + 10 s).
        env.update(
            AWS_ENDPOINT=proxy.url, MIMOQ_JOB_TIMEOUT_S="5", MIMOQ_HEARTBEAT_INTERVAL_S="0.5"
        )
        doomed = machines.start(env, "machine-a")
        job = await Producer(redis, settings).enqueue(
            {"kind": "speech", "input": "kill me", "id": "killed-1"}
        )
        frozen = await asyncio.to_thread(proxy.frozen.wait, 120)
        assert frozen, f"the upload never reached the proxy:\n{machines.logs()}"
        assert not storage.exists("speech/killed-1.wav")  # mid-upload: nothing visible
        doomed.kill()
        doomed.wait(30)
    assert not storage.exists("speech/killed-1.wav")  # killed: still nothing, not a partial
    env = _worker_env(redis_server, sim, seaweed, tmp_path / "machine-b" / "data", bucket_url)
    env.update(MIMOQ_HEARTBEAT_INTERVAL_S="0.5")
    machines.start(env, "machine-b")
    result = await Producer(redis, settings).wait(job.job_id, timeout_s=120)
    assert result.status == "succeeded", (result.error, machines.logs())
    assert result.output is not None and result.output.url == storage.url("speech/killed-1.wav")
    data = _read_url(result.output.url)
    assert len(data) == result.output.bytes
    with wave.open(io.BytesIO(data)) as w:
        assert w.getnframes() > 0
