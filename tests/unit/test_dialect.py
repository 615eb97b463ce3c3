"""The MiMo dialect: request shapes, response parsing and error classification, by table."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest

from mimoq.core import dialect
from mimoq.core.dialect import StreamedAudio
from mimoq.core.errors import (
    AuthenticationError,
    ContentBlockedError,
    InvalidRequestError,
    PaymentRequiredError,
    RateLimitedError,
    RetryableError,
    UpstreamResponseError,
    UpstreamUnavailable,
)
from mimoq.core.jobs import parse_job

NOW = 1_800_000_000.0


def body_json(body: dialect.RequestBody, audio_b64: str = "") -> dict:
    return json.loads(body.head + audio_b64.encode() + body.tail)


def test_speech_body_puts_text_in_assistant_and_instructions_before_it() -> None:
    job = parse_job(
        {"kind": "speech", "input": "Hello there.", "instructions": "Warm.", "voice": "Mia"}
    )
    assert body_json(dialect.speech_body(job)) == {
        "model": "mimo-v2.5-tts",
        "messages": [
            {"role": "user", "content": "Warm."},
            {"role": "assistant", "content": "Hello there."},
        ],
        "audio": {"format": "wav", "voice": "Mia"},
    }


@pytest.mark.parametrize(
    ("job", "audio"),
    [
        ({"input": "Hi"}, {"format": "wav", "voice": "mimo_default"}),
        ({"input": "Hi", "response_format": "pcm"}, {"format": "wav", "voice": "mimo_default"}),
        (
            {"input": "Hi", "model": "mimo-v2.5-tts-voicedesign", "instructions": "A low voice"},
            {"format": "wav", "optimize_text_preview": False},
        ),
        (
            {
                "input": "Hi",
                "model": "mimo-v2.5-tts-voicedesign",
                "instructions": "x",
                "optimize_text_preview": True,
            },
            {"format": "wav", "optimize_text_preview": True},
        ),
    ],
)
def test_speech_audio_object(job: dict, audio: dict) -> None:
    body = body_json(dialect.speech_body(parse_job({"kind": "speech", **job})))
    assert body["audio"] == audio
    assert "thinking" not in body


def test_voicedesign_description_is_the_user_message() -> None:
    job = parse_job(
        {
            "kind": "speech",
            "input": "Hi",
            "model": "mimo-v2.5-tts-voicedesign",
            "instructions": "A low voice",
        }
    )
    assert body_json(dialect.speech_body(job))["messages"][0] == {
        "role": "user",
        "content": "A low voice",
    }


def test_thinking_passes_through_untouched() -> None:
    job = parse_job({"kind": "speech", "input": "Hi", "thinking": {"type": "disabled"}})
    assert body_json(dialect.speech_body(job))["thinking"] == {"type": "disabled"}


def test_voiceclone_inline_sample_goes_to_audio_voice() -> None:
    uri = "data:audio/wav;base64,UklGRg=="
    job = parse_job(
        {"kind": "speech", "input": "Hi", "model": "mimo-v2.5-tts-voiceclone", "voice": uri}
    )
    assert body_json(dialect.speech_body(job, clone_sample=uri))["audio"] == {
        "format": "wav",
        "voice": uri,
    }


def test_voiceclone_streamed_sample_leaves_a_slot_for_the_base64() -> None:
    job = parse_job(
        {"kind": "speech", "input": "Hi", "model": "mimo-v2.5-tts-voiceclone", "voice": "/x/a.mp3"}
    )
    body = dialect.speech_body(job, clone_sample=StreamedAudio(Path("/x/a.mp3"), "audio/mpeg", 4))
    assert body.head.endswith(b'"data:audio/mpeg;base64,')
    assert body_json(body, "QUJDRA==")["audio"]["voice"] == "data:audio/mpeg;base64,QUJDRA=="
    assert body.content_length() == len(body.head) + 8 + len(body.tail)


def test_transcription_body_shape() -> None:
    job = parse_job(
        {"kind": "transcription", "file": "/a.wav", "language": "zh", "temperature": 0.2}
    )
    body = dialect.transcription_body(job, StreamedAudio(Path("/a.wav"), "audio/wav", 5))
    assert body_json(body, "AAAAAAAA") == {
        "model": "mimo-v2.5-asr",
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "input_audio",
                        "input_audio": {"data": "data:audio/wav;base64,AAAAAAAA"},
                    }
                ],
            }
        ],
        "asr_options": {"language": "zh"},
        "temperature": 0.2,
    }
    assert body.content_length() == len(body.head) + 8 + len(body.tail)


def test_unicode_text_survives_in_the_body() -> None:
    job = parse_job({"kind": "speech", "input": '你好 "quoted" \\ \x00', "voice": "冰糖"})
    body = body_json(dialect.speech_body(job))
    assert body["messages"][-1]["content"] == '你好 "quoted" \\ \x00'


def test_headers_accept_json_and_bearer() -> None:
    assert dialect.auth_headers("sk-x") == {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Authorization": "Bearer sk-x",
    }
    assert "Authorization" not in dialect.auth_headers(None)


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "retry_after", "text"),
    [
        (
            429,
            b'{"error":{"code":"429","message":"Too many requests","type":"limitation"}}',
            {},
            RateLimitedError,
            None,
            "Too many requests",
        ),
        (429, b"", {"retry-after": "7"}, RateLimitedError, 7.0, "empty body"),
        (
            429,
            b"{}",
            {"retry-after": format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True)},
            RateLimitedError,
            30.0,
            "HTTP 429",
        ),
        (429, b"{}", {"retry-after": "soon"}, RateLimitedError, None, "HTTP 429"),
        (
            400,
            b'{"error":{"code":"400","message":"Param Incorrect","param":"messages must contain an assistant role for TTS model","type":""}}',
            {},
            InvalidRequestError,
            None,
            "Param Incorrect — messages must contain an assistant role",
        ),
        (
            402,
            b'{"type":"server_error","message":"Upstream request failed: Insufficient account funds"}',
            {},
            PaymentRequiredError,
            None,
            "Insufficient account funds (server_error)",
        ),
        (
            401,
            b'{"error":{"code":401,"message":"Invalid API key"}}',
            {},
            AuthenticationError,
            None,
            "Invalid API key (401)",
        ),
        (403, b"forbidden", {}, AuthenticationError, None, "non-JSON body"),
        (404, b"{}", {}, InvalidRequestError, None, "HTTP 404"),
        (421, b'{"error":"blocked"}', {}, ContentBlockedError, None, "blocked"),
        (500, b"<html>oops</html>", {}, UpstreamUnavailable, None, "non-JSON body"),
        (502, b"[1,2]", {}, UpstreamUnavailable, None, "non-JSON body"),
        (
            503,
            b'{"error":{"message":null}}',
            {"retry-after": "2.5"},
            UpstreamUnavailable,
            2.5,
            "HTTP 503",
        ),
        (504, b"\xff\xfe", {}, UpstreamUnavailable, None, "non-JSON body"),
        (408, b"", {}, UpstreamUnavailable, None, "HTTP 408"),
        (406, b"{}", {}, InvalidRequestError, None, "HTTP 406"),
        (302, b"", {}, UpstreamResponseError, None, "HTTP 302"),
    ],
)
def test_classify_http_error(
    status: int, body: bytes, headers: dict, kind: type, retry_after: float | None, text: str
) -> None:
    error = dialect.classify_http_error(status, body, headers, now=NOW)
    assert type(error) is kind
    assert error.status == status
    assert text in error.message
    if isinstance(error, RetryableError):
        assert (
            error.retry_after_s == pytest.approx(retry_after)
            if retry_after is not None
            else error.retry_after_s is None
        )


def test_error_message_is_capped() -> None:
    error = dialect.classify_http_error(
        400, json.dumps({"message": "x" * 10_000}).encode(), {}, now=NOW
    )
    assert len(error.message) < 600


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("-5", None),  # not delta-seconds: MiMo's answer gets the usual backoff
        ("1e3", None),
        ("1.5", 1.5),
        ("nan", None),
        ("inf", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("garbage", None),
    ],
)
def test_mimos_retry_after_is_read_like_a_callback_receivers(
    value: str | None, expected: float | None
) -> None:
    # one parser (http_headers.parse_retry_after) for both; this is how MiMo's 429 uses it
    headers = {} if value is None else {"retry-after": value}
    error = dialect.classify_http_error(429, b"{}", headers, now=NOW)
    assert isinstance(error, RateLimitedError) and error.retry_after_s == expected


@pytest.mark.parametrize(
    ("raw", "text", "usage"),
    [
        (
            b'{"choices":[{"message":{"content":" Hello. "}}],"usage":{"total_tokens":66,"seconds":4}}',
            "Hello.",
            {"total_tokens": 66, "seconds": 4},
        ),
        (b'{"choices":[{"message":{"content":""}}]}', "", None),
    ],
)
def test_parse_transcription(raw: bytes, text: str, usage: dict | None) -> None:
    assert dialect.parse_transcription(raw) == (text, usage)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b"{}",
        b'{"choices":[]}',
        b'{"choices":[{"message":{"content":null}}]}',
        b'{"choices":[{"message":"x"}]}',
    ],
)
def test_parse_transcription_refuses_bodies_without_a_transcript(raw: bytes) -> None:
    with pytest.raises(UpstreamResponseError):
        dialect.parse_transcription(raw)


def test_speech_skeleton_needs_audio() -> None:
    ok = {
        "choices": [{"message": {"audio": {"id": "a", "data": ""}}}],
        "usage": {"total_tokens": 3},
    }
    assert dialect.check_speech_skeleton(ok, audio_found=True) == {"total_tokens": 3}
    with pytest.raises(UpstreamResponseError):
        dialect.check_speech_skeleton(ok, audio_found=False)
    with pytest.raises(UpstreamResponseError):
        dialect.check_speech_skeleton(
            {"choices": [{"message": {"content": "hi"}}]}, audio_found=True
        )
