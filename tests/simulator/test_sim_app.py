"""The simulator app over ASGI: MiMo's shapes, strictness, auth, faults, quota and statistics."""

from __future__ import annotations

import base64
import binascii
import io
import json
import time
import wave
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from mimoq.core import dialect_constants as dc
from mimoq.sim import SimApp, SimConfig, SimulatedDisconnectError, create_app
from mimoq.sim.faults import Fault, FaultKind
from mimoq.sim.validate import NO_ASSISTANT
from tests.simulator.sim_helpers import MP3_URI, asr, data_uri, stdlib_wav, tts

CHAT = "/v1/chat/completions"
Sim = tuple[httpx.AsyncClient, SimApp]
Make = Callable[..., Sim]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    """A factory: an httpx client wired to a fresh simulator app built with ``SimConfig(**kw)``."""
    clients: list[httpx.AsyncClient] = []

    def build(**kw: Any) -> Sim:
        app = create_app(SimConfig(**kw))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim")
        clients.append(client)
        return client, app

    yield build
    for client in clients:
        await client.aclose()


@pytest.fixture
def sim(make: Make) -> Sim:
    return make()


def _audio(response: httpx.Response) -> bytes:
    data = response.json()["choices"][0]["message"]["audio"]["data"]
    return base64.b64decode(data, validate=True)


def _param_error(param: str) -> dict[str, Any]:
    return {"error": {"code": "400", "message": "Param Incorrect", "param": param, "type": ""}}


# --- successful answers ---------------------------------------------------------------------


async def test_tts_answer_has_mimo_shape_and_a_real_wav(sim: Sim) -> None:
    client, _ = sim
    response = await client.post(
        CHAT,
        json=tts(user="Warm narration.", audio={"format": "wav", "voice": "Mia"}),
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["id", "object", "created", "model", "choices", "usage"]
    assert body["object"] == "chat.completion" and body["model"] == dc.TTS_MODEL
    assert abs(body["created"] - time.time()) < 60
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "stop"
    message = choice["message"]
    assert (message["role"], message["content"]) == ("assistant", "")
    audio = message["audio"]
    assert list(audio) == ["id", "data", "expires_at", "transcript"]
    assert audio["expires_at"] is None and audio["transcript"] is None and audio["id"]
    with wave.open(io.BytesIO(_audio(response))) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (24_000, 1, 2)
        assert wav.getnframes() == round(0.06 * len("Hello there.") * 24_000)
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0


async def test_wav_duration_grows_with_text_and_follows_the_configured_rate(make: Make) -> None:
    client, _ = make(sample_rate=16_000, speech_seconds_per_char=0.1)
    frames = []
    for text in ("Hi.", "A longer sentence to speak.", "A longer sentence to speak. " * 10):
        with wave.open(io.BytesIO(_audio(await client.post(CHAT, json=tts(text=text))))) as wav:
            assert wav.getframerate() == 16_000
            frames.append(wav.getnframes())
            assert wav.getnframes() == round(max(0.3, 0.1 * len(text)) * 16_000)
    assert frames == sorted(frames) and len(set(frames)) == 3


async def test_pcm16_is_raw_samples(sim: Sim) -> None:
    client, _ = sim
    text = "Raw samples please."
    raw = _audio(await client.post(CHAT, json=tts(text=text, audio={"format": "pcm16"})))
    assert len(raw) == round(0.06 * len(text) * dc.PCM_SAMPLE_RATE) * 2
    assert not raw.startswith(b"RIFF")


@pytest.mark.parametrize(
    "body",
    [
        tts(model=dc.VOICEDESIGN_MODEL, user="A gravelly pirate voice."),
        tts(model=dc.VOICECLONE_MODEL, audio={"voice": MP3_URI}),
        tts(audio={"voice": "冰糖"}),
    ],
)
async def test_every_tts_model_answers(sim: Sim, body: dict[str, Any]) -> None:
    client, _ = sim
    response = await client.post(CHAT, json=body)
    assert response.status_code == 200 and response.json()["model"] == body["model"]
    assert _audio(response).startswith(b"RIFF")


async def test_asr_of_the_simulators_own_wav_returns_the_text(
    sim: Sim,
) -> None:
    client, _ = sim
    text = "Bonjour, 你好, hello!"
    spoken = _audio(await client.post(CHAT, json=tts(text=text)))
    response = await client.post(CHAT, json=asr(data_uri(spoken), options={"language": "auto"}))
    assert response.status_code == 200
    body = response.json()
    assert body["choices"][0]["message"] == {"role": "assistant", "content": text}
    seconds = 0.06 * len(text)
    usage = body["usage"]
    assert usage["seconds"] == pytest.approx(seconds, abs=1e-3)
    assert usage["prompt_tokens"] == round(seconds * 6.25) + 21
    assert usage["prompt_tokens_details"]["audio_tokens"] == round(seconds * 6.25)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_asr_cost_matches_the_documented_four_second_clip(
    sim: Sim,
) -> None:
    """The MiMo dialect (docs/mimo-dialect.md): a 4 s clip cost 46 prompt tokens, 25 of them audio."""
    client, _ = sim
    response = await client.post(CHAT, json=asr(data_uri(stdlib_wav(16_000, 64_000))))
    usage = response.json()["usage"]
    assert (usage["prompt_tokens"], usage["prompt_tokens_details"]["audio_tokens"]) == (46, 25)
    assert usage["seconds"] == 4.0
    assert response.json()["choices"][0]["message"]["content"].startswith("[audio 4.00s sha1:")


async def test_omit_usage(make: Make) -> None:
    client, _ = make(omit_usage=True)
    assert "usage" not in (await client.post(CHAT, json=tts())).json()
    assert "usage" not in (await client.post(CHAT, json=asr())).json()


async def test_audio_bytes_override_forces_the_size(make: Make) -> None:
    client, _ = make(audio_bytes_override=300_001)
    raw = _audio(await client.post(CHAT, json=tts(text="x")))
    with wave.open(io.BytesIO(raw)) as wav:
        assert wav.getnframes() * 2 == 300_000


async def test_text_chunk_can_be_switched_off(make: Make) -> None:
    client, _ = make(wav_text_chunk=False)
    raw = _audio(await client.post(CHAT, json=tts()))
    assert b"ICMT" not in raw[:200] and raw[36:40] == b"data"


# --- strictness over HTTP -------------------------------------------------------------------


async def test_text_in_a_user_message_is_mimos_documented_400(
    sim: Sim,
) -> None:
    client, _ = sim
    response = await client.post(CHAT, json=tts(text=None, user="Hello there."))
    assert response.status_code == 400
    assert response.json() == _param_error(NO_ASSISTANT)
    assert response.text == json.dumps(_param_error(NO_ASSISTANT), separators=(",", ":"))


@pytest.mark.parametrize(
    ("content", "status", "param_part"),
    [
        (b"", 400, "empty"),
        (b"{not json", 400, "not valid JSON"),
        (b"[]", 400, "JSON object"),
        (json.dumps(tts(model="whisper-1")).encode(), 404, "whisper-1"),
        (json.dumps(tts(audio={"format": "mp3"})).encode(), 400, "wav or pcm16"),
        (json.dumps(tts(audio={"voice": "alloy"})).encode(), 400, "alloy"),
        (json.dumps(tts(model=dc.VOICEDESIGN_MODEL)).encode(), 400, "describing the voice"),
        (json.dumps(tts(model=dc.VOICECLONE_MODEL)).encode(), 400, "audio.voice"),
        (json.dumps(asr(uri="data:audio/flac;base64,AAAA")).encode(), 400, "data:audio/wav"),
        (json.dumps(asr(options={"language": "de"})).encode(), 400, "language"),
    ],
)
async def test_refusals_use_mimos_error_shape(
    sim: Sim, content: bytes, status: int, param_part: str
) -> None:
    client, _ = sim
    headers = {"content-type": "application/json"}
    response = await client.post(CHAT, content=content, headers=headers)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == str(status) and error["type"] == ""
    assert param_part in error["param"]


async def test_asr_over_the_base64_limit_is_refused(sim: Sim) -> None:
    client, _ = sim
    uri = data_uri(stdlib_wav(16_000, (dc.MAX_AUDIO_B64_CHARS // 4 * 3) // 2))
    assert len(uri) > dc.MAX_AUDIO_B64_CHARS
    response = await client.post(CHAT, json=asr(uri))
    assert response.status_code == 400 and "exceeds" in response.json()["error"]["param"]


async def test_max_text_chars(make: Make) -> None:
    client, _ = make(max_text_chars=20)
    assert (await client.post(CHAT, json=tts(text="x" * 20))).status_code == 200
    assert (await client.post(CHAT, json=tts(text="x" * 21))).status_code == 400


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/chat/completions", 404),  # the base URL ends in /v1
        ("POST", "/v1/audio/speech", 404),  # MiMo has no OpenAI audio endpoints
        ("GET", CHAT, 405),
        ("GET", "/_sim/nothing", 404),
    ],
)
async def test_routes(sim: Sim, method: str, path: str, status: int) -> None:
    client, _ = sim
    response = await client.request(method, path, json=tts())
    assert response.status_code == status
    assert response.json()["error"]["code"] == str(status)


@pytest.mark.parametrize(
    ("accept", "status"),
    [
        ("audio/*", 406),
        ("audio/mpeg", 406),
        ("application/json, audio/wav;q=0.5", 406),
        ("application/json", 200),
        ("*/*", 200),
        (None, 200),
    ],
)
async def test_accept_audio_is_406(sim: Sim, accept: str | None, status: int) -> None:
    client, _ = sim
    headers = {} if accept is None else {"Accept": accept}
    response = await client.post(CHAT, json=tts(), headers=headers)
    assert response.status_code == status
    if status == 406:
        assert response.json()["error"]["code"] == "406"


# --- auth -----------------------------------------------------------------------------------

KEY = "sk-sim-secret-123"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": f"Basic {KEY}"}, 401),
        ({"Authorization": KEY}, 401),
        ({"api-key": "wrong"}, 401),
        ({"Authorization": f"Bearer {KEY}"}, 200),
        ({"Authorization": f"bearer {KEY}"}, 200),
        ({"api-key": KEY}, 200),
        ({"Authorization": "Bearer wrong", "api-key": KEY}, 200),
    ],
)
async def test_api_key(make: Make, headers: dict[str, str], status: int) -> None:
    client, _ = make(api_key=KEY)
    response = await client.post(CHAT, json=tts(), headers=headers)
    assert response.status_code == status
    assert KEY not in response.text
    if status == 401:
        assert response.json()["error"]["code"] == "401"


async def test_auth_is_checked_before_anything_else(make: Make) -> None:
    client, app = make(api_key=KEY)
    await client.post("/_sim/faults", json={"kind": "status", "status": 503})
    response = await client.post(
        CHAT, content=b"{broken", headers={"Accept": "audio/*", "content-type": "application/json"}
    )
    assert response.status_code == 401
    assert app.state.pending_faults() != []  # a refused caller does not use up a fault
    refused = await client.post(CHAT, json=tts())
    assert app.state.stats()["requests"] == {"<none>": 1, dc.TTS_MODEL: 1}  # still counted
    assert refused.status_code == 401


async def test_no_key_configured_accepts_any(sim: Sim) -> None:
    client, _ = sim
    response = await client.post(CHAT, json=tts(), headers={"Authorization": "Bearer anything"})
    assert response.status_code == 200


# --- faults through the control API ---------------------------------------------------------


async def _fault(client: httpx.AsyncClient, spec: dict[str, Any] | list[dict[str, Any]]) -> None:
    response = await client.post("/_sim/faults", json=spec)
    assert response.status_code == 200, response.text


async def test_status_fault_wrapped_429_with_retry_after(
    sim: Sim,
) -> None:
    client, _ = sim
    await _fault(client, {"kind": "status", "status": 429, "retry_after": "2"})
    first = await client.post(CHAT, json=tts())
    assert first.status_code == 429 and first.headers["retry-after"] == "2"
    assert first.json() == {
        "error": {"code": "429", "message": "Too many requests", "type": "limitation"}
    }
    second = await client.post(CHAT, json=tts())
    assert second.status_code == 200 and "retry-after" not in second.headers


async def test_status_fault_unwrapped_body(sim: Sim) -> None:
    client, _ = sim
    await _fault(client, {"kind": "status", "status": 402, "body": "unwrapped"})
    response = await client.post(CHAT, json=tts())
    assert response.status_code == 402
    # exactly the unwrapped body quoted in docs/mimo-dialect.md
    assert response.text == (
        '{"type":"server_error","message":"Upstream request failed: Insufficient account funds"}'
    )


async def test_status_fault_unwrapped_server_error_with_message(
    sim: Sim,
) -> None:
    client, _ = sim
    message = "Upstream request failed: Insufficient account funds"
    await _fault(client, {"kind": "status", "status": 500, "body": "unwrapped", "message": message})
    response = await client.post(CHAT, json=tts())
    assert response.status_code == 500
    assert response.json() == {"type": "server_error", "message": message}


async def test_status_fault_not_json(sim: Sim) -> None:
    client, _ = sim
    await _fault(client, {"kind": "status", "status": 502, "body": "not_json"})
    response = await client.post(CHAT, json=tts())
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")
    assert "502 Bad Gateway" in response.text
    with pytest.raises(json.JSONDecodeError):
        response.json()


@pytest.mark.parametrize("status", [401, 402, 403, 421, 500, 503, 504])
async def test_any_error_status_can_be_produced(sim: Sim, status: int) -> None:
    client, _ = sim
    await _fault(client, {"kind": "status", "status": status})
    response = await client.post(CHAT, json=tts())
    assert response.status_code == status and response.json()["error"]["code"] == str(status)


async def test_faults_follow_match_and_times(sim: Sim) -> None:
    client, app = sim
    await _fault(client, {"kind": "status", "status": 503, "match": "second part", "times": 2})
    statuses = [
        (await client.post(CHAT, json=tts(text=text))).status_code
        for text in ("first part", "second part", "third part", "second part", "second part")
    ]
    assert statuses == [200, 503, 200, 503, 200]
    assert app.state.stats()["faults_applied"] == {"status": 2}


async def test_status_fault_applies_before_validation(sim: Sim) -> None:
    """An overloaded upstream fails a request before looking at it."""
    client, _ = sim
    await _fault(client, {"kind": "status", "status": 503})
    response = await client.post(CHAT, content=b"{broken")
    assert response.status_code == 503


async def test_latency_fault_delays_the_answer(sim: Sim) -> None:
    client, _ = sim
    await _fault(client, {"kind": "latency", "ms": 300})
    started = time.monotonic()
    response = await client.post(CHAT, json=tts())
    assert response.status_code == 200 and time.monotonic() - started >= 0.3


async def test_malformed_base64(sim: Sim) -> None:
    client, _ = sim
    good = (await client.post(CHAT, json=tts())).json()["choices"][0]["message"]["audio"]["data"]
    await _fault(client, {"kind": "malformed_base64"})
    response = await client.post(CHAT, json=tts())
    assert response.status_code == 200
    data = response.json()["choices"][0]["message"]["audio"]["data"]  # still valid JSON
    assert len(data) == len(good) and data != good
    with pytest.raises(binascii.Error):
        base64.b64decode(data, validate=True)


@pytest.mark.parametrize(("mode", "expected"), [("empty", ""), ("null", None), ("missing", ...)])
async def test_empty_audio(sim: Sim, mode: str, expected: object) -> None:
    client, _ = sim
    await _fault(client, {"kind": "empty_audio", "data": mode})
    response = await client.post(CHAT, json=tts())
    assert response.status_code == 200
    audio = response.json()["choices"][0]["message"]["audio"]
    assert audio.get("data", ...) == expected
    assert audio["expires_at"] is None and "id" in audio


async def test_empty_audio_on_asr_is_an_empty_transcript(
    sim: Sim,
) -> None:
    client, _ = sim
    await _fault(client, {"kind": "empty_audio"})
    response = await client.post(CHAT, json=asr())
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == ""


async def test_audio_bytes_fault_forces_one_answers_size(
    sim: Sim,
) -> None:
    client, _ = sim
    await _fault(client, {"kind": "audio_bytes", "audio_bytes": 1_000_000})
    big = _audio(await client.post(CHAT, json=tts(audio={"format": "pcm16"})))
    normal = _audio(await client.post(CHAT, json=tts(audio={"format": "pcm16"})))
    assert len(big) == 1_000_000 and len(normal) < 100_000


async def test_speech_faults_wait_for_a_speech_request(sim: Sim) -> None:
    client, _ = sim
    await _fault(client, {"kind": "malformed_base64"})
    assert (await client.post(CHAT, json=asr())).status_code == 200
    data = (await client.post(CHAT, json=tts())).json()["choices"][0]["message"]["audio"]["data"]
    with pytest.raises(binascii.Error):
        base64.b64decode(data, validate=True)


async def test_disconnect_fault_drops_mid_body(sim: Sim) -> None:
    """Over ASGI the drop surfaces as the app's exception (over TCP: a cut connection)."""
    client, app = sim
    await _fault(client, {"kind": "disconnect", "after_bytes": 100})
    with pytest.raises(SimulatedDisconnectError):
        await client.post(CHAT, json=tts())
    assert app.state.stats()["disconnects"] == 1
    assert (await client.post(CHAT, json=tts())).status_code == 200


@pytest.mark.parametrize(("after_bytes", "sent"), [(None, "half"), (0, 0), (10**9, "all but one")])
async def test_disconnect_always_cuts_short(
    sim: Sim, after_bytes: int | None, sent: int | str
) -> None:
    _, app = sim
    spec: dict[str, Any] = {"kind": "disconnect"}
    if after_bytes is not None:
        spec["after_bytes"] = after_bytes
    app.state.add_fault(Fault.model_validate(spec))
    sizes: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": json.dumps(tts()).encode(), "more_body": False}

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            headers = dict(message["headers"])
            sizes.append(int(headers[b"content-length"]))
        else:
            sizes.append(len(message.get("body", b"")))

    scope = {"type": "http", "method": "POST", "path": CHAT, "headers": [], "query_string": b""}
    with pytest.raises(SimulatedDisconnectError):
        await app(scope, receive, send)
    declared, body = sizes[0], sum(sizes[1:])
    expected = {"half": declared // 2, "all but one": declared - 1}.get(str(sent), sent)
    assert body == expected


async def test_whole_run_faults_last_and_yield_to_queued_ones(make: Make) -> None:
    poison = Fault(kind=FaultKind.STATUS, status=503, match="poison", times=1)
    client, app = make(faults=(poison,))
    texts = ["fine", "poison pill", "poison again", "fine"]
    statuses = [(await client.post(CHAT, json=tts(text=t))).status_code for t in texts]
    assert statuses == [200, 503, 503, 200]  # never used up, whatever ``times`` says
    await _fault(client, {"kind": "status", "status": 429, "match": "poison"})
    assert (await client.post(CHAT, json=tts(text="poison"))).status_code == 429  # queued first
    await client.post("/_sim/reset")
    assert (await client.post(CHAT, json=tts(text="poison"))).status_code == 503  # survives reset
    assert app.state.stats()["faults_applied"] == {"status": 1}


async def test_in_process_faults_are_the_same_queue(sim: Sim) -> None:
    client, app = sim
    app.state.add_fault(Fault(kind=FaultKind.STATUS, status=504))
    assert (await client.get("/_sim/faults")).json()["pending"][0]["status"] == 504
    assert (await client.post(CHAT, json=tts())).status_code == 504


async def test_fault_list_listing_and_clearing(sim: Sim) -> None:
    client, _ = sim
    await _fault(client, [{"kind": "status"}, {"kind": "latency", "ms": 1, "times": 2}])
    pending = (await client.get("/_sim/faults")).json()["pending"]
    assert [(p["kind"], p["remaining"]) for p in pending] == [("status", 1), ("latency", 2)]
    assert (await client.delete("/_sim/faults")).status_code == 200
    assert (await client.get("/_sim/faults")).json()["pending"] == []
    assert (await client.post(CHAT, json=tts())).status_code == 200


@pytest.mark.parametrize(
    "content", [b"{}", b"not json", b'{"kind": "status", "status": 200}', b'[{"kind": "nope"}]']
)
async def test_bad_fault_specs_are_400(sim: Sim, content: bytes) -> None:
    client, app = sim
    response = await client.post("/_sim/faults", content=content)
    assert response.status_code == 400 and response.json()["error"]["param"]
    assert app.state.pending_faults() == []


# --- random failures, statistics ------------------------------------------------------------


async def test_fail_rate_one_fails_everything_with_the_configured_statuses(make: Make) -> None:
    client, _ = make(fail_rate=1.0, fail_statuses=(429, 503))
    statuses = {(await client.post(CHAT, json=tts())).status_code for _ in range(30)}
    assert statuses == {429, 503}


async def test_fail_rate_is_seeded(make: Make) -> None:
    async def run(seed: int) -> list[int]:
        client, _ = make(fail_rate=0.5, seed=seed)
        return [(await client.post(CHAT, json=tts())).status_code for _ in range(40)]

    first, again = await run(7), await run(7)
    assert first == again
    assert 5 < first.count(200) < 35  # both outcomes happen


async def test_stats_count_requests_responses_and_reset(sim: Sim) -> None:
    client, _ = sim
    await client.post(CHAT, json=tts())
    await client.post(CHAT, json=tts(model=dc.VOICEDESIGN_MODEL))  # 400: no description
    await client.post(CHAT, json=asr())
    await client.post(CHAT, content=b"garbage")
    await client.get("/_sim/faults")  # control calls are not counted
    stats = (await client.get("/_sim/stats")).json()
    assert stats["requests"] == {
        dc.TTS_MODEL: 1,
        dc.VOICEDESIGN_MODEL: 1,
        dc.ASR_MODEL: 1,
        "<none>": 1,
    }
    assert stats["responses"] == {"200": 2, "400": 2}
    assert stats["total_requests"] == 4
    assert (stats["in_flight"], stats["max_in_flight"]) == (0, 1)
    assert (await client.post("/_sim/reset")).status_code == 200
    stats = (await client.get("/_sim/stats")).json()
    assert stats["requests"] == {} and stats["responses"] == {} and stats["total_requests"] == 0


# --- quota policy ---------------------------------------------------------------------------


class RecordingQuota:
    """A QuotaPolicy that admits or refuses as told and records every call, in order."""

    def __init__(
        self,
        log: list[tuple[Any, ...]],
        refuse_for_s: float | None = None,
        send_retry_after: bool = False,
    ) -> None:
        self.log = log
        self.refuse_for_s = refuse_for_s
        self.send_retry_after = send_retry_after

    def admit(self, model: str, estimated_tokens: int) -> RecordingQuota | float:
        self.log.append(("admit", model, estimated_tokens))
        return self if self.refuse_for_s is None else self.refuse_for_s

    def release(self) -> None:
        self.log.append(("release",))

    def record_usage(self, model: str, tokens: int) -> None:
        self.log.append(("usage", model, tokens))


async def _call(app: SimApp, body: dict[str, Any], log: list[tuple[Any, ...]]) -> None:
    """Drive the ASGI app directly, logging each message it sends next to the quota's calls."""
    payload = json.dumps(body).encode()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": payload, "more_body": False}

    async def send(message: Any) -> None:
        log.append(("send", message["type"], message.get("more_body", False)))

    scope = {"type": "http", "method": "POST", "path": CHAT, "headers": [], "query_string": b""}
    await app(scope, receive, send)


@pytest.mark.parametrize("body", [tts(text="Count my tokens."), asr()])
async def test_quota_admits_with_the_answers_tokens_and_releases_after_the_last_byte(
    make: Make, body: dict[str, Any]
) -> None:
    log: list[tuple[Any, ...]] = []
    client, app = make(quota=RecordingQuota(log))
    expected_total = (await client.post(CHAT, json=body)).json()["usage"]["total_tokens"]
    log.clear()
    await _call(app, body, log)
    model = body["model"]
    assert log[0] == ("admit", model, expected_total)
    assert log[-2:] == [("usage", model, expected_total), ("release",)]
    sends = [entry for entry in log if entry[0] == "send"]
    assert log.index(sends[-1]) < log.index(("release",))  # released after the final body part
    assert sends[-1] == ("send", "http.response.body", False)


@pytest.mark.parametrize(
    ("config_flag", "policy_flag", "header"),
    [(None, False, None), (None, True, "3"), (True, False, "3"), (False, True, None)],
)
async def test_quota_refusal_is_mimos_429(
    make: Make, config_flag: bool | None, policy_flag: bool, header: str | None
) -> None:
    log: list[tuple[Any, ...]] = []
    policy = RecordingQuota(log, refuse_for_s=2.2, send_retry_after=policy_flag)
    client, app = make(quota=policy, quota_retry_after=config_flag)
    response = await client.post(CHAT, json=tts())
    assert response.status_code == 429
    assert response.text == (
        '{"error":{"code":"429","message":"Too many requests","type":"limitation"}}'
    )
    assert response.headers.get("retry-after") == header
    assert [entry[0] for entry in log] == ["admit"]  # nothing to release or record
    assert app.state.stats()["quota_rejected"] == {dc.TTS_MODEL: 1}


async def test_invalid_requests_never_reach_the_quota(make: Make) -> None:
    log: list[tuple[Any, ...]] = []
    client, _ = make(quota=RecordingQuota(log))
    await client.post(CHAT, json=tts(text=None, user="x"))
    assert log == []


class CountingQuota(RecordingQuota):
    """A policy that also has ``stats`` and ``reset`` (as mimoq.sim.quota.SimQuota does)."""

    def stats(self) -> dict[str, Any]:
        return {"admitted": sum(1 for entry in self.log if entry[0] == "admit")}

    def reset(self) -> None:
        self.log.clear()


async def test_a_policys_own_stats_and_reset_are_reachable(make: Make) -> None:
    client, _ = make(quota=CountingQuota([]))
    await client.post(CHAT, json=tts())
    assert (await client.get("/_sim/stats")).json()["quota"] == {"admitted": 1}
    await client.post("/_sim/reset")
    assert (await client.get("/_sim/stats")).json()["quota"] == {"admitted": 0}


async def test_stats_have_no_quota_section_without_a_policy(sim: Sim) -> None:
    client, _ = sim
    assert "quota" not in (await client.get("/_sim/stats")).json()
