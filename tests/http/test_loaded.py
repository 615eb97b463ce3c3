"""Mixed, loaded and hostile at once: several tenants and models through the front door while
a foreign producer writes raw Redis and malformed requests arrive in between."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from mimoq.core import wire
from tests.http.conftest import ALICE, BOB, UNNAMED, Stack, wav_bytes
from tests.support.polling import wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_mixed_load_with_foreign_producer_and_garbage(stack: Stack, tmp_path: Path) -> None:
    redis = stack.redis()
    script = redis.register_script(wire.enqueue_script())
    mp3ish = tmp_path / "x.wav"
    mp3ish.write_bytes(wav_bytes(0.3))

    def speech(i: int) -> tuple[str, int, bytes]:
        token = (ALICE, BOB, UNNAMED)[i % 3]
        body = (
            {
                "model": "mimo-v2.5-tts-voicedesign",
                "input": f"Design {i}.",
                "instructions": "a calm voice",
                "voice": "",
            }
            if i % 2
            else {"model": "tts-1", "input": f"Preset {i}.", "voice": "Milo"}
        )
        with httpx.Client(
            base_url=stack.url, headers={"Authorization": f"Bearer {token}"}, timeout=120
        ) as c:
            answer = c.post("/v1/audio/speech", json=body)
        return "speech", answer.status_code, answer.content[:4]

    def transcription(i: int) -> tuple[str, int, bytes]:
        with httpx.Client(
            base_url=stack.url, headers={"Authorization": f"Bearer {BOB}"}, timeout=120
        ) as c:
            answer = c.post(
                "/v1/audio/transcriptions",
                files={"file": (f"rec{i}.wav", wav_bytes(0.4 + i / 10), "audio/wav")},
                data={"model": "whisper-1", "language": "en"},
            )
        return "transcription", answer.status_code, answer.content[:9]

    def garbage(i: int) -> tuple[str, int, bytes]:
        with httpx.Client(
            base_url=stack.url, headers={"Authorization": f"Bearer {ALICE}"}, timeout=60
        ) as c:
            answer = c.post(
                "/v1/audio/transcriptions",
                content=b"--B\r\nContent-Disposition: form-data\r\n\r\n" + bytes(range(256)) * 4,
                headers={"Content-Type": "multipart/form-data; boundary=B"},
            )
        return "garbage", answer.status_code, b""

    def foreign(i: int) -> tuple[str, int, bytes]:
        # Another service, in another language, straight into Redis: a good job and a bad one.
        good = script(
            keys=wire.enqueue_keys(f"foreign-{i}"),
            args=[f"foreign-{i}", json.dumps({"kind": "speech", "input": "raw", "voice": "Mia"})],
        )
        bad = script(
            keys=wire.enqueue_keys(f"foreign-bad-{i}"),
            args=[f"foreign-bad-{i}", '{"kind": "speech", "input": 7, "voice": {"x": 1}}'],
        )
        return "foreign", int(good), str(bad).encode()

    calls = [(speech, i) for i in range(8)] + [(transcription, i) for i in range(4)]
    calls += [(garbage, i) for i in range(3)] + [(foreign, i) for i in range(3)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        outcomes = list(pool.map(lambda call: call[0](call[1]), calls))

    for kind, status, head in outcomes:
        if kind == "speech":
            assert (status, head) == (200, b"RIFF")
        elif kind == "transcription":
            assert status == 200 and head.startswith(b'{"text":')
        elif kind == "garbage":
            assert status == 400
    # The foreign jobs are worked by the same fleet: the good ones succeed, the bad ones fail
    # with a result record (never a crashed or stalled worker).
    for i in range(3):
        wait_until(lambda i=i: redis.get(f"mimoq:result:foreign-{i}"), what="foreign job result")
        assert json.loads(redis.get(f"mimoq:result:foreign-{i}") or b"{}")["status"] == "succeeded"
    # Nor are foreign jobs visible over HTTP: they belong to no tenant.
    with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {ALICE}"}) as c:
        assert c.get("/v1/jobs/foreign-0").status_code == 404
    # After all that the front door still serves.
    assert speech(0)[1] == 200
