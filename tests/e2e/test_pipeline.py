"""The core pipeline end to end: producer → Redis → worker → simulated MiMo → file → callback.

Real redis-server (private), the simulator as MiMo on loopback, a real arq worker, a real
HTTP receiver; callback signatures verified with the reference standardwebhooks library.
"""

from __future__ import annotations

import asyncio
import json
import wave
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis
from standardwebhooks.webhooks import Webhook

from mimoq.core import scripts, wire
from mimoq.core.audio import WavFormat
from mimoq.core.errors import InvalidRequestError
from mimoq.core.jobs import JobResult
from mimoq.core.settings import Settings
from mimoq.producer.client import Producer
from mimoq.sim.audio_gen import wav_header_with_text
from mimoq.sim.faults import Fault
from mimoq.sim.sim_server import RunningSim
from mimoq.worker.arq_worker import MimoqWorker
from tests.e2e.conftest import API_KEY, WEBHOOK_SECRET, e2e_settings, running_worker
from tests.support.receiver import Receiver, Request

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def speech_wav(path: Path, text: str, *, rate: int = 16_000, seconds: float = 1.0) -> Path:
    """A WAV the simulator 'hears' as ``text`` (it reads the LIST/INFO comment back)."""
    samples = b"\x10\x00" * int(rate * seconds)
    path.write_bytes(wav_header_with_text(WavFormat(rate, 1, 16), len(samples), text) + samples)
    return path


async def received(receiver: Receiver, n: int) -> list[Request]:
    # The worker shares this event loop: wait in a thread so it keeps running.
    return await asyncio.to_thread(receiver.wait_for, n, 10.0)


def verified(request: Request) -> dict[str, Any]:
    """The callback body, after the reference implementation has checked its signature."""
    payload = Webhook(WEBHOOK_SECRET).verify(request.body, request.headers)
    assert isinstance(payload, dict)
    return payload


async def run(producer: Producer, job: dict[str, Any]) -> JobResult:
    enqueued = await producer.enqueue(job)
    assert enqueued.created
    return await producer.wait(enqueued.job_id, timeout_s=20)


def add_fault(sim: RunningSim, fault: dict[str, Any]) -> None:
    sim.state.add_fault(Fault.model_validate(fault))


def sim_requests(sim: RunningSim) -> int:
    return int(sim.state.stats()["total_requests"])


@pytest.mark.usefixtures("worker")
class TestSpeech:
    async def test_wav_with_signed_callback(self, producer: Producer, receiver: Receiver) -> None:
        result = await run(
            producer,
            {
                "kind": "speech",
                "input": "Hello there, general.",
                "voice": "Mia",
                "instructions": "Warm.",
                "callback": {"url": receiver.url("/hook")},
                "metadata": {"order": 7},
            },
        )
        assert result.status == "succeeded", result.error
        output = result.output
        assert output is not None and output.format == "wav"
        with wave.open(output.path) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24_000, 1, 2)
            assert w.getnframes() / 24_000 == pytest.approx(output.duration_s, abs=1e-3)
        assert output.bytes == Path(output.path).stat().st_size
        assert (output.sample_rate, output.channels, output.bits_per_sample) == (24_000, 1, 16)
        assert output.duration_s == pytest.approx(0.06 * len("Hello there, general."), abs=0.01)

        [request] = await received(receiver, 1)
        payload = verified(request)
        assert payload["job_id"] == result.id and payload["status"] == "succeeded"
        assert payload["type"] == "job.succeeded"
        assert payload["output"]["path"] == output.path
        assert payload["metadata"] == {"order": 7}
        assert request.headers["webhook-id"] == wire.callback_job_id(result.id)

    async def test_pcm_is_raw_samples(self, producer: Producer, receiver: Receiver) -> None:
        result = await run(
            producer,
            {
                "kind": "speech",
                "input": "Raw samples please.",
                "response_format": "pcm",
                "callback": {"url": receiver.url()},
            },
        )
        assert result.status == "succeeded", result.error
        assert result.output is not None and result.output.path.endswith(".pcm")
        raw = Path(result.output.path).read_bytes()
        assert not raw.startswith(b"RIFF")
        assert len(raw) == round(result.output.duration_s * 24_000) * 2
        assert verified((await received(receiver, 1))[0])["output"]["format"] == "pcm"

    async def test_voicedesign(self, producer: Producer, receiver: Receiver) -> None:
        result = await run(
            producer,
            {
                "kind": "speech",
                "model": "mimo-v2.5-tts-voicedesign",
                "input": "Designed.",
                "instructions": "A calm, low female voice.",
                "callback": {"url": receiver.url()},
            },
        )
        assert result.status == "succeeded", result.error
        assert result.model == "mimo-v2.5-tts-voicedesign"
        assert verified((await received(receiver, 1))[0])["status"] == "succeeded"

    async def test_voiceclone_streams_the_sample(
        self, producer: Producer, receiver: Receiver, tmp_path: Path
    ) -> None:
        sample = speech_wav(tmp_path / "me.wav", "my voice", seconds=3.0)
        result = await run(
            producer,
            {
                "kind": "speech",
                "model": "mimo-v2.5-tts-voiceclone",
                "input": "Cloned.",
                "voice": str(sample),
                "callback": {"url": receiver.url()},
            },
        )
        assert result.status == "succeeded", result.error
        assert verified((await received(receiver, 1))[0])["model"] == "mimo-v2.5-tts-voiceclone"

    async def test_voiceclone_inline_data_uri(self, producer: Producer, tmp_path: Path) -> None:
        import base64

        sample = speech_wav(tmp_path / "me.wav", "my voice")
        uri = "data:audio/wav;base64," + base64.b64encode(sample.read_bytes()).decode()
        result = await run(
            producer,
            {
                "kind": "speech",
                "model": "mimo-v2.5-tts-voiceclone",
                "input": "Cloned.",
                "voice": uri,
            },
        )
        assert result.status == "succeeded", result.error


@pytest.mark.usefixtures("worker")
class TestTranscription:
    @pytest.mark.parametrize(("fmt", "suffix"), [("json", ".json"), ("text", ".txt")])
    async def test_transcribe(
        self, producer: Producer, receiver: Receiver, tmp_path: Path, fmt: str, suffix: str
    ) -> None:
        audio = speech_wav(tmp_path / "clip.wav", "The quick brown fox.", seconds=4.0)
        result = await run(
            producer,
            {
                "kind": "transcription",
                "file": str(audio),
                "response_format": fmt,
                "language": "en",
                "callback": {"url": receiver.url()},
            },
        )
        assert result.status == "succeeded", result.error
        assert result.text == "The quick brown fox."
        assert result.usage is not None and result.usage["seconds"] == pytest.approx(4.0, abs=0.01)
        assert result.output is not None and result.output.path.endswith(suffix)
        written = Path(result.output.path).read_text()
        assert (
            (json.loads(written) == {"text": "The quick brown fox."})
            if fmt == "json"
            else written == "The quick brown fox.\n"
        )
        payload = verified((await received(receiver, 1))[0])
        assert payload["text"] == "The quick brown fox." and payload["kind"] == "transcription"

    async def test_relative_path_is_resolved_by_the_producer(
        self, producer: Producer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        speech_wav(tmp_path / "rel.wav", "relative")
        monkeypatch.chdir(tmp_path)
        result = await run(producer, {"kind": "transcription", "file": "rel.wav"})
        assert result.text == "relative"


@pytest.mark.usefixtures("worker")
class TestUpstreamFaults:
    async def test_429_then_success(self, producer: Producer, sim: RunningSim) -> None:
        add_fault(sim, {"kind": "status", "status": 429, "match": "rate-me", "retry_after": "0"})
        result = await run(producer, {"kind": "speech", "input": "rate-me please"})
        assert result.status == "succeeded", result.error
        assert result.tries == 2
        assert sim.state.stats()["responses"] == {"429": 1, "200": 1}

    @pytest.mark.parametrize("body", ["wrapped", "unwrapped", "not_json"])
    async def test_5xx_then_success(self, producer: Producer, sim: RunningSim, body: str) -> None:
        add_fault(
            sim, {"kind": "status", "status": 503, "times": 2, "match": "flaky", "body": body}
        )
        result = await run(producer, {"kind": "speech", "input": "flaky upstream"})
        assert result.status == "succeeded", result.error
        assert result.tries == 3

    async def test_dropped_connection_is_retried(self, producer: Producer, sim: RunningSim) -> None:
        add_fault(sim, {"kind": "disconnect", "match": "cut-me"})
        result = await run(producer, {"kind": "speech", "input": "cut-me off"})
        assert result.status == "succeeded", result.error
        assert result.tries == 2

    async def test_persistent_5xx_gives_up_after_max_tries(
        self, producer: Producer, sim: RunningSim, receiver: Receiver
    ) -> None:
        add_fault(sim, {"kind": "status", "status": 500, "times": None, "match": "doomed"})
        result = await run(
            producer, {"kind": "speech", "input": "doomed", "callback": {"url": receiver.url()}}
        )
        assert result.status == "failed"
        assert result.error is not None and result.error["type"] == "upstream_unavailable_error"
        assert "gave up after 4 tries" in str(result.error["message"])
        assert sim.state.stats()["responses"] == {"500": 4}
        assert verified((await received(receiver, 1))[0])["status"] == "failed"

    @pytest.mark.parametrize(
        ("fault", "error_type"),
        [
            # 401/402/403 pause the account instead (tests/accounts): the job waits, not fails.
            ({"kind": "status", "status": 421}, "content_blocked_error"),
            ({"kind": "malformed_base64"}, "upstream_response_error"),
            ({"kind": "empty_audio"}, "upstream_response_error"),
        ],
    )
    async def test_permanent_errors_fail_once_with_one_callback(
        self,
        producer: Producer,
        sim: RunningSim,
        receiver: Receiver,
        fault: dict[str, Any],
        error_type: str,
    ) -> None:
        add_fault(sim, {**fault, "match": "no-retry"})
        result = await run(
            producer, {"kind": "speech", "input": "no-retry", "callback": {"url": receiver.url()}}
        )
        assert result.status == "failed"
        assert result.error is not None and result.error["type"] == error_type
        assert result.tries == 1 and sim_requests(sim) == 1
        [request] = await received(receiver, 1)
        payload = verified(request)
        assert payload["status"] == "failed" and payload["error"]["type"] == error_type
        assert API_KEY not in request.body.decode() and API_KEY not in result.model_dump_json()
        assert await received(receiver, 1) == [request]  # exactly one callback

    async def test_no_partial_output_after_a_failure(
        self, producer: Producer, sim: RunningSim, settings: Settings
    ) -> None:
        add_fault(sim, {"kind": "malformed_base64", "match": "broken"})
        result = await run(producer, {"kind": "speech", "input": "broken"})
        assert result.status == "failed"
        assert not any(p.is_file() for p in Path(settings.storage.data_dir).rglob("*"))


async def test_wrong_key_pauses_the_account_then_fails_the_job_once(
    redis_server: Any, sim: RunningSim, tmp_path: Path, redis: ArqRedis, receiver: Receiver
) -> None:
    # A 401 pauses the account (probed, not retried per job); a pause past its maximum
    # fails the waiting job once, with the account's error. Time-compressed here.
    settings = e2e_settings(
        redis_server, sim, tmp_path, mimo={"key": "sk-wrong-key"}, accounts={"probe_base_s": 0.2, "probe_max_s": 0.2, "pause_max_s": 0.5},
    )  # fmt: skip
    async with running_worker(settings):
        result = await run(
            Producer(redis, settings),
            {"kind": "speech", "input": "hi", "callback": {"url": receiver.url()}},
        )
        # The callback is its own job: wait for it while the worker still runs.
        [request] = await received(receiver, 1)
    assert result.status == "failed" and result.error is not None
    assert result.error["type"] == "authentication_error" and result.error["status"] == 401
    assert "paused since" in str(result.error["message"]) and result.tries == 1
    answered = sim.state.stats()["responses"]
    assert set(answered) == {"401"} and answered["401"] <= 6  # the first call and a few probes
    assert "sk-wrong-key" not in result.model_dump_json()
    assert verified(request)["error"]["type"] == "authentication_error"


@pytest.mark.usefixtures("worker")
class TestForeignProducers:
    """Any language can enqueue with plain Redis commands; nothing it sends crashes a worker."""

    async def test_raw_enqueue_script_gets_the_job_done(
        self, redis: ArqRedis, producer: Producer
    ) -> None:
        job = json.dumps({"kind": "speech", "input": "from another language", "voice": "Dean"})
        assert (
            await redis.eval(wire.enqueue_script(), 4, *wire.enqueue_keys("raw-1"), "raw-1", job)
            == 1
        )
        result = await producer.wait("raw-1", timeout_s=20)
        assert result.status == "succeeded" and result.output is not None
        assert Path(result.output.path).name == "raw-1.wav"
        stored = json.loads(await redis.get(wire.result_key("raw-1")))  # any language can GET it
        assert stored["status"] == "succeeded" and stored["id"] == "raw-1"

    @pytest.mark.parametrize(
        ("raw", "says"),
        [
            (b"\x80\x04\x95pickle", "not valid UTF-8 JSON"),
            (
                b'{"f":"speech","a":[],"k":{"job":{"kind":"speech","input":"x","speed":3}},"et":1}',
                "speed",
            ),
            (b'{"f":"speech","a":[],"k":{"job":"hello"},"et":1}', "JSON object"),
            (
                b'{"f":"speech","a":[],"k":{"job":{"kind":"transcription","file":"a.wav"}},"et":1}',
                "kind",
            ),
            (b'{"f":"os.system","a":["rm -rf /"],"k":{},"et":1}', "unknown task"),
            (
                b'{"f":"transcription","a":[],"k":{"job":{"kind":"transcription","file":"/nope/missing.wav"}},"et":1}',
                "outside the folders local inputs may come from",
            ),
        ],
    )
    async def test_malformed_job_fails_cleanly_and_the_worker_lives_on(
        self, redis: ArqRedis, producer: Producer, worker: MimoqWorker, raw: bytes, says: str
    ) -> None:
        await redis.set(wire.job_key("bad-1"), raw)
        await redis.zadd(wire.QUEUE_NAME, {"bad-1": 1})
        bad = await producer.wait("bad-1", timeout_s=20)
        assert bad.status == "failed" and bad.error is not None
        assert bad.error["type"] == "invalid_request_error"
        assert says in str(bad.error["message"])
        good = await run(producer, {"kind": "speech", "input": "still alive"})
        assert good.status == "succeeded"
        assert worker.jobs_failed == 0  # no job crashed out of our task wrapper

    async def test_salvaged_callback_reports_an_invalid_job(
        self, redis: ArqRedis, producer: Producer, receiver: Receiver
    ) -> None:
        job = {
            "kind": "speech",
            "input": "x",
            "speed": 2,
            "callback": {"url": receiver.url()},
            "metadata": {"ref": 9},
        }
        await redis.eval(
            wire.enqueue_script(), 4, *wire.enqueue_keys("bad-2"), "bad-2", json.dumps(job)
        )
        result = await producer.wait("bad-2", timeout_s=20)
        assert result.status == "failed" and result.metadata == {"ref": 9}
        payload = verified((await received(receiver, 1))[0])
        assert payload["error"]["param"] == "speed" and payload["metadata"] == {"ref": 9}


class TestProducerRefusals:
    """Everything MiMo cannot do is refused before anything is enqueued."""

    @pytest.mark.parametrize(
        ("job", "param"),
        [
            ({"kind": "speech", "input": "x", "response_format": "mp3"}, "response_format"),
            ({"kind": "speech", "input": "x", "response_format": "opus"}, "response_format"),
            ({"kind": "speech", "input": "x", "response_format": "aac"}, "response_format"),
            ({"kind": "speech", "input": "x", "response_format": "flac"}, "response_format"),
            ({"kind": "speech", "input": "x", "speed": 1.5}, "speed"),
            (
                {"kind": "transcription", "file": "a.wav", "response_format": "verbose_json"},
                "response_format",
            ),
            (
                {"kind": "transcription", "file": "a.wav", "response_format": "srt"},
                "response_format",
            ),
            (
                {"kind": "transcription", "file": "a.wav", "response_format": "vtt"},
                "response_format",
            ),
            ({"kind": "transcription", "file": "a.wav", "prompt": "hint"}, "prompt"),
            (
                {"kind": "transcription", "file": "a.wav", "timestamp_granularities": ["segment"]},
                "timestamp_granularities",
            ),
            ({"kind": "transcription", "file": "a.flac"}, "file"),
            ({"kind": "transcription", "file": "/does/not/exist.wav"}, "file"),
            (
                {
                    "kind": "speech",
                    "input": "x",
                    "callback": {"url": "http://169.254.169.254/latest"},
                },
                "callback.url",
            ),
        ],
    )
    async def test_refused_at_the_producer(
        self, producer: Producer, redis: ArqRedis, job: dict[str, Any], param: str
    ) -> None:
        with pytest.raises(InvalidRequestError) as info:
            await producer.enqueue(job)
        assert info.value.param == param
        assert await redis.zcard(wire.QUEUE_NAME) == 0

    async def test_file_that_is_not_what_it_says(self, producer: Producer, tmp_path: Path) -> None:
        fake = tmp_path / "fake.wav"
        fake.write_bytes(b"ID3 this is an mp3, really")
        with pytest.raises(InvalidRequestError, match="starts like an MP3 file but holds no MPEG"):
            await producer.enqueue({"kind": "transcription", "file": str(fake)})


@pytest.mark.usefixtures("worker")
async def test_same_id_runs_once(producer: Producer, sim: RunningSim) -> None:
    first = await producer.enqueue({"kind": "speech", "input": "once", "id": "idem-1"})
    await producer.wait("idem-1", timeout_s=20)
    again = await producer.enqueue({"kind": "speech", "input": "once", "id": "idem-1"})
    assert first.created and not again.created
    assert sim_requests(sim) == 1


@pytest.mark.usefixtures("worker")
async def test_status_moves_from_queued_to_succeeded(producer: Producer, sim: RunningSim) -> None:
    enqueued = await producer.enqueue({"kind": "speech", "input": "status please"}, defer_s=0.3)
    assert (await producer.status(enqueued.job_id)).status == "deferred"
    await producer.wait(enqueued.job_id, timeout_s=20)
    report = await producer.status(enqueued.job_id)
    assert report.status == "succeeded" and report.result is not None
    assert (await producer.status("never-enqueued")).status == "not_found"


async def test_simulator_needs_the_key(sim: RunningSim) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(sim.url + "/chat/completions", json={})
    assert response.status_code == 401


@pytest.mark.usefixtures("worker")
async def test_the_readme_redis_cli_example(redis_server: Any, producer: Producer) -> None:
    """The README's redis-cli line, run as written, gets a job done."""
    import shutil
    import subprocess

    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is not installed")
    script = scripts.source("enqueue")
    job = '{"kind":"speech","input":"Hello from redis-cli","voice":"Mia"}'
    out = await asyncio.to_thread(
        subprocess.run,
        [
            "redis-cli",
            "-p",
            str(redis_server.port),
            "EVAL",
            script,
            "4",
            "arq:job:job-42",
            "arq:result:job-42",
            "mimoq:result:job-42",
            "mimoq:queue",
            "job-42",
            job,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "1"
    assert (await producer.wait("job-42", timeout_s=20)).status == "succeeded"
