"""The simulator on real loopback sockets: start/stop, end to end, cut connections, streaming."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import time
import tracemalloc
import wave
from collections.abc import Iterator

import httpx
import pytest

from mimoq.core import dialect_constants as dc
from mimoq.sim import SimConfig
from mimoq.sim.sim_server import RunningSim, run_sim, start_in_thread
from tests.simulator.sim_helpers import asr, data_uri, tts


@pytest.fixture
def sim() -> Iterator[RunningSim]:
    with start_in_thread(SimConfig()) as running:
        yield running


def test_urls_point_at_loopback(sim: RunningSim) -> None:
    assert sim.url == f"http://127.0.0.1:{sim.port}/v1"
    assert sim.base == f"http://127.0.0.1:{sim.port}" and sim.port > 0


async def test_speak_then_transcribe_over_tcp(sim: RunningSim) -> None:
    text = "The simulator hears what it says."
    async with httpx.AsyncClient(base_url=sim.url) as client:
        spoken = await client.post("/chat/completions", json=tts(text=text))
        assert spoken.status_code == 200
        wav = base64.b64decode(spoken.json()["choices"][0]["message"]["audio"]["data"])
        with wave.open(io.BytesIO(wav)) as parsed:
            assert parsed.getframerate() == 24_000
        heard = await client.post("/chat/completions", json=asr(data_uri(wav)))
        assert heard.json()["choices"][0]["message"]["content"] == text
        stats = (await client.get(sim.base + "/_sim/stats")).json()
    assert stats["requests"] == {dc.TTS_MODEL: 1, dc.ASR_MODEL: 1}


async def test_api_key_over_tcp() -> None:
    async with run_sim(SimConfig(api_key="sk-e2e")) as sim, httpx.AsyncClient() as client:
        url = sim.url + "/chat/completions"
        assert (await client.post(url, json=tts())).status_code == 401
        ok = await client.post(url, json=tts(), headers={"Authorization": "Bearer sk-e2e"})
        assert ok.status_code == 200


async def test_disconnect_cuts_the_connection_quietly(
    sim: RunningSim, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    async with httpx.AsyncClient(base_url=sim.url) as client:
        fault = {"kind": "disconnect", "after_bytes": 1000}
        assert (await client.post(sim.base + "/_sim/faults", json=fault)).status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/chat/completions", json=tts())
        # the server is fine afterwards, and logged no traceback for a drop made on purpose
        assert (await client.post("/chat/completions", json=tts())).status_code == 200
    assert sim.state.stats()["disconnects"] == 1
    assert not [r for r in caplog.records if r.exc_info]


async def test_in_flight_is_counted_across_concurrent_requests() -> None:
    async with run_sim(SimConfig(latency_ms=400)) as sim, httpx.AsyncClient() as client:
        calls = [
            asyncio.create_task(client.post(sim.url + "/chat/completions", json=tts()))
            for _ in range(5)
        ]
        deadline = time.monotonic() + 10
        while sim.state.stats()["in_flight"] < 5:  # a real signal, polled with a deadline
            assert time.monotonic() < deadline, sim.state.stats()
            await asyncio.sleep(0.01)
        responses = await asyncio.gather(*calls)
    assert [r.status_code for r in responses] == [200] * 5
    stats = sim.state.stats()
    assert (stats["in_flight"], stats["max_in_flight"]) == (0, 5)


async def test_big_answer_streams_in_many_chunks_with_little_memory(sim: RunningSim) -> None:
    """20 MB of audio (27 MB of base64) leaves the server in pieces, never held whole."""
    audio_bytes = 20_000_000
    sim.state.stats()  # touch before tracing, so nothing lazy is counted
    async with httpx.AsyncClient(base_url=sim.url) as client:
        fault = {"kind": "audio_bytes", "audio_bytes": audio_bytes}
        await client.post(sim.base + "/_sim/faults", json=fault)
        tracemalloc.start()
        try:
            chunks = received = 0
            head = b""
            async with client.stream(
                "POST", "/chat/completions", json=tts(audio={"format": "pcm16"})
            ) as response:
                declared = int(response.headers["content-length"])
                async for chunk in response.aiter_raw():
                    chunks += 1
                    received += len(chunk)
                    if len(head) < 4096:
                        head += chunk[:4096]
                    tail = chunk[-200:]
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert received == declared > audio_bytes * 4 // 3
    assert chunks > 100
    assert peak < 4 * 1024 * 1024, f"peak traced memory {peak} bytes"
    assert head.startswith(b'{"id":') and b'"data":"' in head
    assert tail.endswith(b"}")


def test_stop_closes_the_port() -> None:
    sim = start_in_thread(SimConfig())
    url = sim.url + "/chat/completions"
    assert httpx.post(url, json=tts()).status_code == 200
    sim.stop()
    sim.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.post(url, json=tts(), timeout=2)


def test_two_simulators_are_independent() -> None:
    with start_in_thread(SimConfig()) as one, start_in_thread(SimConfig(fail_rate=1.0)) as two:
        assert one.port != two.port
        assert httpx.post(one.url + "/chat/completions", json=tts()).status_code == 200
        assert httpx.post(two.url + "/chat/completions", json=tts()).status_code >= 429
