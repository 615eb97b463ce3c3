"""mimoq.worker.upstream_errors: every failure of a MiMo call and the error it becomes."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from mimoq.core.audio import AudioFormatError
from mimoq.core.audio_stream import TruncatedAudioError
from mimoq.core.b64stream import Base64StreamError
from mimoq.core.dialect import RequestBody
from mimoq.core.errors import (
    AuthenticationError,
    InvalidRequestError,
    MimoqError,
    PaymentRequiredError,
    RateLimitedError,
    RetryableError,
    UpstreamResponseError,
    UpstreamUnavailable,
)
from mimoq.worker.mimo_client import MimoClient
from mimoq.worker.upstream_errors import ErrorAnswer, UpstreamFailure, as_mimoq_error

NOW = 1_700_000_000.0


def _answer(status: int, body: bytes = b"{}", headers: dict[str, str] | None = None) -> ErrorAnswer:
    return ErrorAnswer(status, body, headers or {}, at=NOW)


@pytest.mark.parametrize(
    ("failure", "kind", "message"),
    [
        (_answer(429), RateLimitedError, "MiMo answered HTTP 429: "),
        (_answer(503), UpstreamUnavailable, "MiMo answered HTTP 503: "),
        (_answer(401), AuthenticationError, "MiMo answered HTTP 401: "),
        (_answer(402), PaymentRequiredError, "MiMo answered HTTP 402: "),
        (_answer(400), InvalidRequestError, "MiMo answered HTTP 400: "),
        (httpx.ReadTimeout("slow"), UpstreamUnavailable, "MiMo did not answer in time (ReadTimeout)"),
        (httpx.ConnectError("refused"), UpstreamUnavailable, "connection to MiMo failed (ConnectError)"),
        (TruncatedAudioError("3 of 8 bytes"), UpstreamUnavailable, "MiMo's audio was cut short: 3 of"),
        (AudioFormatError("8-bit float"), UpstreamResponseError, "MiMo's audio is not a usable WAV: 8"),
        (Base64StreamError("bad padding"), UpstreamResponseError, "MiMo's audio could not be decoded: b"),
    ],
)  # fmt: skip
def test_each_failure_becomes_its_error(
    failure: UpstreamFailure, kind: type[MimoqError], message: str
) -> None:
    error = as_mimoq_error(failure)
    assert type(error) is kind
    assert error.message.startswith(message)


def test_a_retry_after_is_counted_from_when_the_answer_was_read() -> None:
    error = as_mimoq_error(_answer(429, headers={"retry-after": "7"}))
    assert isinstance(error, RetryableError) and error.retry_after_s == 7.0


def test_the_key_echoed_in_an_error_body_is_redacted() -> None:
    body = b'{"error": {"message": "invalid key sk-secret-123"}}'
    error = as_mimoq_error(_answer(401, body), secret="sk-secret-123")
    assert "sk-secret-123" not in error.message and "sk-secret-123" not in str(error)
    assert "[redacted]" in error.message
    assert "sk-secret-123" not in str(error.to_dict())


# The client hands each failure to the map where it happens (end to end through httpx).

KEY = "sk-echoed-key"
BODY = RequestBody(head=b'{"model":"mimo-v2.5-tts"}', tail=b"")


async def _speak(handler: Callable[[httpx.Request], httpx.Response]) -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = MimoClient(http, base_url="http://mimo.test/v1", api_key=KEY)
        async with client.speech(BODY) as audio:
            async for _ in audio:
                pass


async def test_the_client_redacts_its_key_from_a_non_2xx_answer() -> None:
    echo = {"error": {"message": f"key {KEY} is out of funds"}}
    with pytest.raises(PaymentRequiredError) as caught:
        await _speak(lambda _: httpx.Response(402, json=echo))
    assert KEY not in caught.value.message and "[redacted]" in caught.value.message


async def test_the_client_maps_a_dropped_connection() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(UpstreamUnavailable, match=r"connection to MiMo failed \(ConnectError\)"):
        await _speak(refuse)


async def test_the_client_maps_undecodable_audio() -> None:
    bad = b'{"choices":[{"message":{"audio":{"data":"QUJD=QUJD"}}}]}'
    with pytest.raises(UpstreamResponseError, match="could not be decoded"):
        await _speak(lambda _: httpx.Response(200, content=bad))
