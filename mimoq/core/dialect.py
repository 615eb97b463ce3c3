"""PURE: MiMo request bodies, response parsing and error classification.

Imports no httpx, redis or arq. The worker's MiMo client is the thin shell around this.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimoq.core import dialect_constants as dc
from mimoq.core.b64stream import b64_encoded_len
from mimoq.core.errors import (
    AuthenticationError,
    ContentBlockedError,
    InvalidRequestError,
    MimoqError,
    PaymentRequiredError,
    RateLimitedError,
    UpstreamResponseError,
    UpstreamUnavailable,
)
from mimoq.core.http_headers import parse_retry_after
from mimoq.core.jobs import SpeechJob, TranscriptionJob

#: Sent on every call. ``Accept: audio/*`` (what OpenAI TTS SDKs send) gets a 406.
BASE_HEADERS: Mapping[str, str] = {"Content-Type": "application/json", "Accept": "application/json"}
_AUDIO_SLOT = "\x00mimoq-audio\x00"
_AUDIO_SLOT_JSON = json.dumps(_AUDIO_SLOT)
MAX_ERROR_MESSAGE_CHARS = 500


@dataclass(frozen=True)
class StreamedAudio:
    """A local audio file to embed as a base64 data URI without reading it whole."""

    path: Path
    mime: str
    size: int


@dataclass(frozen=True)
class RequestBody:
    """A JSON body: ``head`` + base64 of ``audio`` (if any) + ``tail``, sent as a stream."""

    head: bytes
    tail: bytes
    audio: StreamedAudio | None = None

    def content_length(self) -> int:
        audio_len = b64_encoded_len(self.audio.size) if self.audio else 0
        return len(self.head) + audio_len + len(self.tail)


def auth_headers(api_key: str | None) -> dict[str, str]:
    headers = dict(BASE_HEADERS)
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def _encode(payload: dict[str, Any], audio: StreamedAudio | None) -> RequestBody:
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    if audio is None:
        return RequestBody(head=text.encode(), tail=b"")
    head, sep, tail = text.partition(_AUDIO_SLOT_JSON)
    assert sep, "the audio slot must be in the payload"
    prefix = f'"data:{audio.mime};base64,'
    return RequestBody(head=(head + prefix).encode(), tail=('"' + tail).encode(), audio=audio)


def speech_body(job: SpeechJob, *, clone_sample: str | StreamedAudio | None = None) -> RequestBody:
    """The chat-completions body for a speech job.

    Always asks for ``wav``: whether a non-streaming ``pcm16`` answer is raw PCM is
    unconfirmed, while a WAV answer can always be stripped to its samples.
    ``clone_sample`` is the voice-clone sample: an inline data URI or a file to stream.
    """
    messages: list[dict[str, Any]] = []
    if job.instructions:
        messages.append({"role": "user", "content": job.instructions})
    messages.append({"role": "assistant", "content": job.input})
    audio: dict[str, Any] = {"format": "wav"}
    streamed: StreamedAudio | None = None
    if job.model == dc.TTS_MODEL:
        audio["voice"] = job.voice_for_request()
    elif job.model == dc.VOICECLONE_MODEL:
        if clone_sample is None:
            raise InvalidRequestError(f"{dc.VOICECLONE_MODEL} needs a voice sample", param="voice")
        if isinstance(clone_sample, StreamedAudio):
            streamed = clone_sample
            audio["voice"] = _AUDIO_SLOT
        else:
            audio["voice"] = clone_sample
    else:  # voicedesign: it may rewrite and lengthen the text unless told not to
        audio["optimize_text_preview"] = bool(job.optimize_text_preview)
    payload: dict[str, Any] = {"model": job.model, "messages": messages, "audio": audio}
    if job.thinking is not None:
        payload["thinking"] = job.thinking
    return _encode(payload, streamed)


def transcription_body(job: TranscriptionJob, audio: str | StreamedAudio) -> RequestBody:
    """The chat-completions body for a transcription job; ``audio`` is a data URI or a file."""
    streamed = audio if isinstance(audio, StreamedAudio) else None
    part = {"type": "input_audio", "input_audio": {"data": _AUDIO_SLOT if streamed else audio}}
    payload: dict[str, Any] = {
        "model": job.model,
        "messages": [{"role": "user", "content": [part]}],
        "asr_options": {"language": job.language},
    }
    if job.temperature is not None:
        payload["temperature"] = job.temperature
    return _encode(payload, streamed)


# --- responses ----------------------------------------------------------------------------


def _first_message(body: Mapping[str, Any]) -> Mapping[str, Any]:
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise UpstreamResponseError("MiMo answered 200 without choices[0]")
    message = choices[0].get("message")
    if not isinstance(message, Mapping):
        raise UpstreamResponseError("MiMo answered 200 without choices[0].message")
    return message


def usage_of(body: Mapping[str, Any]) -> dict[str, Any] | None:
    usage = body.get("usage")
    return dict(usage) if isinstance(usage, Mapping) else None


def usage_tokens(usage: Mapping[str, Any] | None) -> int | None:
    """Total tokens of a chat-completions ``usage`` object, or None when it does not say."""
    if not usage:
        return None
    total = usage.get("total_tokens")
    if isinstance(total, int | float) and not isinstance(total, bool) and total >= 0:
        return int(total)
    parts = [usage.get("prompt_tokens"), usage.get("completion_tokens")]
    if all(isinstance(p, int | float) and not isinstance(p, bool) and p >= 0 for p in parts):
        return int(sum(p for p in parts if p is not None))
    return None


def check_speech_skeleton(body: Mapping[str, Any], *, audio_found: bool) -> dict[str, Any] | None:
    """Validate a TTS answer whose audio was streamed out; returns its ``usage`` (may be None)."""
    message = _first_message(body)
    if not audio_found or not isinstance(message.get("audio"), Mapping):
        raise UpstreamResponseError(
            "MiMo answered 200 without audio at choices[0].message.audio.data"
        )
    return usage_of(body)


def parse_transcription(raw: bytes) -> tuple[str, dict[str, Any] | None]:
    """The transcript and usage of an ASR answer.

    An empty string is a valid transcript (silence); a missing or non-string ``content`` is
    a provider fault.
    """
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise UpstreamResponseError("MiMo answered 200 with a body that is not JSON") from None
    if not isinstance(body, Mapping):
        raise UpstreamResponseError("MiMo answered 200 with JSON that is not an object")
    content = _first_message(body).get("content")
    if not isinstance(content, str):
        raise UpstreamResponseError(
            "MiMo answered 200 without a transcript in choices[0].message.content"
        )
    return content.strip(), usage_of(body)


# --- errors -------------------------------------------------------------------------------


def _text(value: object) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def describe_error_body(raw: bytes) -> str:
    """A one-line description of an error body, read leniently from any of MiMo's shapes."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, Mapping):
        inner = body.get("error")
        fields = inner if isinstance(inner, Mapping) else body
        if isinstance(inner, str):
            fields = {"message": inner}
        parts = [_text(fields.get(k)) for k in ("message", "param")]
        kind = _text(fields.get("type")) or _text(fields.get("code"))
        described = " — ".join(p for p in parts if p)
        if described:
            return f"{described} ({kind})" if kind else described
    if not raw.strip():
        return "empty body"
    return "non-JSON body"


def classify_http_error(
    status: int, raw: bytes, headers: Mapping[str, str], *, now: float
) -> MimoqError:
    """Map a non-2xx MiMo answer to the error tree, by HTTP status first."""
    detail = describe_error_body(raw)[:MAX_ERROR_MESSAGE_CHARS]
    message = f"MiMo answered HTTP {status}: {detail}"
    retry_after = parse_retry_after(headers.get("retry-after"), now=now)
    if status == 429:
        return RateLimitedError(message, status=status, retry_after_s=retry_after)
    if status == 408 or status >= 500:
        return UpstreamUnavailable(message, status=status, retry_after_s=retry_after)
    if status in (401, 403):
        return AuthenticationError(message, status=status)
    if status == 402:
        return PaymentRequiredError(message, status=status)
    if status == 421:
        return ContentBlockedError(message, status=status)
    if 400 <= status < 500:
        return InvalidRequestError(message, status=status)
    return UpstreamResponseError(message, status=status)
