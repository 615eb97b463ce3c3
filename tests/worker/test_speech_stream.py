"""MimoClient.speech: the audio as it arrives, one decoded piece per received chunk."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from mimoq.core.dialect import RequestBody
from mimoq.core.errors import UpstreamResponseError, UpstreamUnavailable
from mimoq.worker.mimo_client import MimoClient

BODY = RequestBody(head=b'{"model":"mimo-v2.5-tts"}', tail=b"")
# "QUJD" "REVG" is "ABC" "DEF": the audio string split across two chunks.
CHUNKS = [
    b'{"choices":[{"message":{"audio":{"data":"QUJD',
    b"REVG",
    b'"}}}],"usage":{"total_tokens":7}}',
]


def _client(chunks: list[bytes], *, then: Exception | None = None) -> httpx.AsyncClient:
    async def stream() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk
        if then is not None:
            raise then

    def answer(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=stream())

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


async def test_each_chunk_is_yielded_decoded_and_usage_comes_at_the_end() -> None:
    async with _client(CHUNKS) as http:
        client = MimoClient(http, base_url="http://mimo.test/v1", api_key="sk-x")
        async with client.speech(BODY) as audio:
            pieces = []
            async for piece in audio:
                assert audio.usage is None  # only known once the body has ended
                pieces.append(piece)
    assert pieces == [b"ABC", b"DEF"]  # one piece per chunk: nothing accumulates
    assert audio.usage == {"total_tokens": 7}


async def test_a_connection_dropped_mid_audio_is_upstream_unavailable() -> None:
    dropped = httpx.ReadError("connection reset")
    async with _client(CHUNKS[:1], then=dropped) as http:
        client = MimoClient(http, base_url="http://mimo.test/v1", api_key="sk-x")
        pieces = []
        with pytest.raises(UpstreamUnavailable, match=r"connection to MiMo failed \(ReadError\)"):
            async with client.speech(BODY) as audio:
                async for piece in audio:
                    pieces.append(piece)
    assert pieces == [b"ABC"]  # what arrived before the drop was handed on


async def test_an_answer_without_audio_fails_once_read() -> None:
    async with _client([b'{"choices":[{"message":{"content":"no"}}]}']) as http:
        client = MimoClient(http, base_url="http://mimo.test/v1", api_key="sk-x")
        with pytest.raises(UpstreamResponseError, match="without audio"):
            async with client.speech(BODY) as audio:
                async for _ in audio:
                    pass
