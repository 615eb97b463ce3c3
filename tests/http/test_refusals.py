"""Every refusal in OpenAI's error shape, with the producer's own messages; auth; limits."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from mimoq.core.errors import InvalidRequestError
from mimoq.core.jobs import parse_job
from mimoq.sim.faults import Fault
from tests.conftest import RedisServer, free_port
from tests.http.conftest import (
    ALICE,
    API_KEY,
    BOB,
    UNNAMED,
    HttpAs,
    Stack,
    start_server,
    stop,
    wav_bytes,
)
from tests.support.cli import clean_env, mimoq

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def producer_message(job: dict[str, object]) -> str:
    """What the Python producer says about the same job."""
    with pytest.raises(InvalidRequestError) as refused:
        parse_job(job)
    return refused.value.message


def error_of(answer: httpx.Response) -> dict[str, object]:
    body = answer.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, object] = body["error"]
    return error


@pytest.fixture
def oai(stack: Stack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=stack.v1, api_key=ALICE, max_retries=0, timeout=60) as c:
        yield c


# --- authentication ------------------------------------------------------------------------


def test_no_token_and_wrong_token_are_refused(stack: Stack, http_as: HttpAs) -> None:
    owners_before = len(list(stack.redis().scan_iter("mimoq:owner:*")))
    with httpx.Client(base_url=stack.url, timeout=30) as anonymous:
        answer = anonymous.post("/v1/audio/speech", json={"input": "hi"})
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert error_of(answer)["code"] == "invalid_api_key"
    wrong = "tok-wrong-0123456789abcdef"
    answer = http_as(wrong).get("/v1/jobs/anything")
    assert answer.status_code == 401 and wrong not in answer.text
    with (
        openai.OpenAI(base_url=stack.v1, api_key=wrong, max_retries=0) as c,
        pytest.raises(openai.AuthenticationError),
    ):
        c.audio.speech.create(model="tts-1", voice="Mia", input="hi")
    # Nothing was enqueued for them.
    assert len(list(stack.redis().scan_iter("mimoq:owner:*"))) == owners_before


def test_health_needs_no_token_and_metrics_take_one(stack: Stack, http_as: HttpAs) -> None:
    assert httpx.get(stack.url + "/healthz").json() == {"ok": True}
    refused = httpx.get(stack.url + "/metrics")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert "mimoq_" not in refused.text
    assert http_as("tok-wrong-0123456789abcdef").get("/metrics").status_code == 401
    metrics = http_as(ALICE).get("/metrics")  # a tenant who may open the dashboard
    assert metrics.status_code == 200
    assert "mimoq_http_requests_total" in metrics.text
    # the autoscaling signal is served here too (a fleet scaled to zero has no worker's)
    assert re.search(r"^mimoq_desired_workers \d+\.0$", metrics.text, re.MULTILINE)
    # KEDA's metrics-api scaler (format: prometheus, deploy/kubernetes) reads the value from
    # the line named by valueLocation, taking every sample line as "name value"
    samples = [line for line in metrics.text.splitlines() if line and not line.startswith("#")]
    assert samples and all(len(line.split()) == 2 for line in samples)


# --- the producer's messages, in OpenAI's shape ---------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "tts-1", "input": "hi", "voice": "alloy"}, "voice"),
        (
            {"model": "tts-1", "input": "hi", "voice": "Mia", "response_format": "mp3"},
            "response_format",
        ),
        ({"model": "tts-1", "input": "hi", "voice": "Mia", "speed": 1.5}, "speed"),
        ({"model": "tts-1", "input": "   ", "voice": "Mia"}, "input"),
        (
            {"model": "tts-1", "input": "hi", "voice": "Mia", "stream_format": "sse"},
            "stream_format",
        ),
        ({"model": "mimo-v2.5-tts-voicedesign", "input": "hi", "voice": ""}, "instructions"),
    ],
)
def test_speech_refusals_match_the_producer(
    stack: Stack, oai: openai.OpenAI, body: dict[str, object], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        oai.audio.speech.create(**body)  # type: ignore[arg-type]
    error = refused.value.body
    assert isinstance(error, dict)
    assert error["type"] == "invalid_request_error" and error["param"] == param
    mapped = {
        **{k: v for k, v in body.items() if v != ""},
        "kind": "speech",
        "model": "mimo-v2.5-tts" if body["model"] == "tts-1" else body["model"],
    }
    assert error["message"] == producer_message(mapped)


def test_unknown_model_is_refused_not_guessed(stack: Stack, http_as: HttpAs) -> None:
    answer = http_as(ALICE).post("/v1/audio/speech", json={"model": "gpt-4o-audio", "input": "hi"})
    assert answer.status_code == 400 and error_of(answer)["param"] == "model"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi", "id": "my-own-id"}, "id"),
        ({"input": "hi", "output": "../../etc/passwd"}, "output"),
        (
            {"input": "hi", "model": "mimo-v2.5-tts-voiceclone", "voice": "/etc/hostname.wav"},
            "voice",
        ),
        ({"input": "hi", "callback": {"url": "ftp://x"}}, "callback.url"),
        ({"input": "hi", "metadata": {"blob": "x" * 20_000}}, "metadata"),
    ],
)
def test_hostile_speech_bodies(
    stack: Stack, http_as: HttpAs, body: dict[str, object], param: str
) -> None:
    answer = http_as(ALICE).post("/v1/audio/speech", json=body)
    assert answer.status_code == 400, answer.text
    assert error_of(answer)["param"] == param


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe", b""])
def test_bodies_that_are_not_a_json_object(stack: Stack, http_as: HttpAs, raw: bytes) -> None:
    answer = http_as(ALICE).post(
        "/v1/audio/speech", content=raw, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 400 and error_of(answer)["type"] == "invalid_request_error"


def test_transcription_refusals(stack: Stack, oai: openai.OpenAI, http_as: HttpAs) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        oai.audio.transcriptions.create(
            model="whisper-1", file=("talk.m4a", b"\x00" * 64, "audio/mp4")
        )
    error = refused.value.body
    assert isinstance(error, dict) and error["param"] == "file"
    assert (
        ".m4a is not supported by MiMo" in error["message"]
        and str(stack.data_dir) not in error["message"]
    )

    with pytest.raises(openai.BadRequestError) as refused:
        oai.audio.transcriptions.create(
            model="whisper-1", file=("a.wav", wav_bytes(0.2)), response_format="verbose_json"
        )
    assert isinstance(refused.value.body, dict) and refused.value.body["param"] == "response_format"

    # A WAV whose header lies, as a corrupted file would: refused up front, upload removed.
    with pytest.raises(openai.BadRequestError) as refused:
        oai.audio.transcriptions.create(
            model="whisper-1", file=("broken.wav", b"RIFF\x10\x00\x00\x00WAVEjunk" * 4)
        )
    assert isinstance(refused.value.body, dict) and "'broken.wav'" in refused.value.body["message"]

    http = http_as(ALICE)
    missing = http.post(
        "/v1/audio/transcriptions", data={"model": "whisper-1"}, files={"x": ("", b"")}
    )
    assert missing.status_code == 400
    as_text = http.post("/v1/audio/transcriptions", files={"file": (None, "/etc/passwd")})
    assert as_text.status_code == 400 and error_of(as_text)["param"] == "file"
    not_multipart = http.post("/v1/audio/transcriptions", json={"file": "/etc/passwd.wav"})
    assert not_multipart.status_code == 400 and error_of(not_multipart)["param"] == "file"
    two_files = http.post(
        "/v1/audio/transcriptions",
        files=[("file", ("a.wav", wav_bytes(0.1))), ("file", ("b.wav", wav_bytes(0.1)))],
    )
    assert two_files.status_code == 400
    truncated = http.post(
        "/v1/audio/transcriptions",
        content=b'--XYZ\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        + wav_bytes(0.1),
        headers={"Content-Type": "multipart/form-data; boundary=XYZ"},
    )
    assert truncated.status_code == 400 and "closing boundary" in error_of(truncated)["message"]
    assert list((stack.data_dir / "uploads").glob("*")) == []  # nothing left behind


def test_a_job_that_fails_upstream_is_an_error_not_audio(stack: Stack, http_as: HttpAs) -> None:
    stack.sim.state.add_fault(
        Fault.model_validate({"kind": "status", "status": 400, "match": "Fail me"})
    )
    answer = http_as(ALICE).post("/v1/audio/speech", json={"input": "Fail me.", "voice": "Mia"})
    assert answer.status_code == 400
    error = error_of(answer)
    assert error["type"] == "invalid_request_error" and error["code"] == "job_failed"
    assert API_KEY not in answer.text


# --- limits --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tight(
    redis_server: RedisServer, stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A second server on the same queue with small limits and short timeouts."""
    root = tmp_path_factory.mktemp("tight")
    env = {
        **stack.env,
        "MIMOQ_HTTP_MAX_JSON_BYTES": "2048",
        "MIMOQ_HTTP_MAX_UPLOAD_BYTES": "100000",
        "MIMOQ_HTTP_BODY_IDLE_TIMEOUT_S": "1",
        "MIMOQ_HTTP_HEADER_TIMEOUT_S": "1",
    }
    port = free_port()
    proc = start_server(env, root, port)
    try:
        yield Stack(
            f"http://127.0.0.1:{port}", port, stack.data_dir, stack.redis_url, stack.sim, env
        )
    finally:
        stop(proc)
        log = (root / "serve.log").read_text()
        for secret in (ALICE, BOB, UNNAMED, API_KEY):
            assert secret not in log


def test_oversized_bodies_are_refused(tight: Stack) -> None:
    auth = {"Authorization": f"Bearer {ALICE}"}
    with httpx.Client(base_url=tight.url, headers=auth, timeout=30) as http:
        big = http.post("/v1/audio/speech", json={"input": "x" * 5000})
        assert big.status_code == 413 and error_of(big)["code"] == "request_too_large"

        # Chunked (no Content-Length): counted as it arrives, stopped past the limit.
        def chunks() -> Iterator[bytes]:
            yield b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
            for _ in range(50):
                yield b"\x00" * 10_000

        upload = http.post(
            "/v1/audio/transcriptions", content=chunks(),
            headers={"Content-Type": "multipart/form-data; boundary=B"},
        )  # fmt: skip
        assert upload.status_code == 413
    assert list((tight.data_dir / "uploads").glob("*")) == []


def _raw(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_slow_body_gets_408(tight: Stack) -> None:
    with _raw(tight.port) as sock:
        sock.sendall(
            b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + ALICE.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"in"
        )  # fmt: skip
        started = time.monotonic()
        answer = _read_all(sock)  # the server answers, then closes, while we still owe 96 bytes
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"request_timeout" in answer
    assert time.monotonic() - started < 20


def test_slow_request_head_is_cut_off(tight: Stack) -> None:
    with _raw(tight.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        closed = False
        # Keep trickling header bytes, as a slowloris client does; the server must hang up.
        while time.monotonic() - started < 20:
            try:
                sock.sendall(b"X-a: b\r\n")
            except OSError:
                closed = True
                break
            sock.settimeout(0.3)
            try:
                if sock.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
    assert closed and time.monotonic() - started < 15


def test_no_tokens_means_loopback_only(tmp_path: Path) -> None:
    env = clean_env(REDIS_URL="redis://127.0.0.1:1/0")
    refused = mimoq("serve", "--host", "0.0.0.0", "--port", str(free_port()), env=env, cwd=tmp_path)
    assert refused.returncode == 2
    assert "MIMOQ_API_TOKENS" in refused.stderr
    short = mimoq("serve", env={**env, "MIMOQ_API_TOKENS": "a:short"}, cwd=tmp_path)
    assert (
        short.returncode == 2
        and "entry #1" in short.stderr
        and "short" not in short.stderr.replace("entry", "")
    )
