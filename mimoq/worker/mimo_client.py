"""The MiMo HTTP client; its failures become mimoq errors through ``upstream_errors``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from mimoq.core import tracing
from mimoq.core.b64stream import AudioDataExtractor, Base64StreamError, iter_base64_file
from mimoq.core.dialect import RequestBody, auth_headers, check_speech_skeleton, parse_transcription
from mimoq.core.inputs import open_regular
from mimoq.worker.upstream_errors import ErrorAnswer, as_mimoq_error

MAX_ERROR_BODY_BYTES = 64 * 1024
MAX_TRANSCRIPT_BODY_BYTES = 8 * 1024 * 1024


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    out = bytearray()
    async for chunk in response.aiter_bytes():
        out += chunk[: limit - len(out)]
        if len(out) >= limit:
            break
    return bytes(out)


class SpeechStream:
    """A TTS answer's audio: one decoded piece per received chunk, then :attr:`usage`.

    Memory stays at a chunk whatever the audio's length: the consumer writes (or uploads)
    each piece before the next chunk is read.
    """

    def __init__(self, response: httpx.Response, *, secret: str | None) -> None:
        self._chunks = response.aiter_bytes()
        self._pieces: list[bytes] = []
        self._extractor = AudioDataExtractor(self._pieces.append)
        self._secret = secret
        self._exhausted = False
        #: The answer's ``usage`` (None if MiMo sent none); set once the audio is exhausted.
        self.usage: dict[str, Any] | None = None

    def __aiter__(self) -> SpeechStream:
        return self

    async def __anext__(self) -> bytes:
        try:
            while not self._pieces:
                if self._exhausted:
                    raise StopAsyncIteration
                try:
                    chunk = await anext(self._chunks)
                except StopAsyncIteration:
                    self._finish()
                else:
                    self._extractor.feed(chunk)
        except Base64StreamError as exc:
            raise as_mimoq_error(exc, secret=self._secret) from None
        piece = b"".join(self._pieces)
        self._pieces.clear()
        return piece

    def _finish(self) -> None:
        self._exhausted = True
        skeleton = self._extractor.finish()
        self.usage = check_speech_skeleton(skeleton, audio_found=self._extractor.found)


class MimoClient:
    """Speaks to ``{base_url}/chat/completions`` over one shared ``httpx.AsyncClient``."""

    def __init__(self, http: httpx.AsyncClient, *, base_url: str, api_key: str | None) -> None:
        self._http = http
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._api_key = api_key

    async def _content(self, body: RequestBody) -> AsyncIterator[bytes]:
        yield body.head
        if body.audio is not None:
            # Re-opened as it was checked: a regular file, not a symlink swapped in since.
            with open_regular(body.audio.path, "audio") as local:
                for chunk in iter_base64_file(local.file):
                    yield chunk
        yield body.tail

    @asynccontextmanager
    async def _post(self, body: RequestBody) -> AsyncIterator[httpx.Response]:
        headers = auth_headers(self._api_key)
        headers["Content-Length"] = str(body.content_length())
        try:
            with tracing.mimo_call_span(self._url) as call:
                async with self._http.stream(
                    "POST", self._url, content=self._content(body), headers=headers
                ) as response:
                    call.answered(response.status_code)
                    if not 200 <= response.status_code < 300:
                        raw = await _read_capped(response, MAX_ERROR_BODY_BYTES)
                        answer = ErrorAnswer(
                            response.status_code, raw, response.headers, at=time.time()
                        )
                        raise as_mimoq_error(answer, secret=self._api_key)
                    yield response
        except httpx.TransportError as exc:  # timeouts included
            raise as_mimoq_error(exc, secret=self._api_key) from None

    @asynccontextmanager
    async def speech(self, body: RequestBody) -> AsyncIterator[SpeechStream]:
        """POST a TTS body; yields its audio, decoded as it arrives (see :class:`SpeechStream`).

        Inside the call: a connection dropped while the audio is read is mapped here too.
        """
        async with self._post(body) as response:
            yield SpeechStream(response, secret=self._api_key)

    async def transcribe(self, body: RequestBody) -> tuple[str, dict[str, Any] | None]:
        """POST an ASR body (the audio streamed in); return the transcript and ``usage``."""
        async with self._post(body) as response:
            raw = await _read_capped(response, MAX_TRANSCRIPT_BODY_BYTES)
        return parse_transcription(raw)
