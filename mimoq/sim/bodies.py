"""Response bodies in MiMo's shapes: chat completions with audio or a transcript, and errors."""

from __future__ import annotations

import json
import math
import time
import uuid
from http import HTTPStatus
from typing import Any, Final

from mimoq.sim.faults import EmptyAudio, ErrorBodyStyle

#: ASR cost in the docs: a 4 s clip = 46 prompt tokens, 25 of them audio (6.25/s) + 21 text.
AUDIO_TOKENS_PER_S: Final = 6.25
PROMPT_OVERHEAD_TOKENS: Final = 21
JSON_TYPE: Final = "application/json"
HTML_TYPE: Final = "text/html; charset=utf-8"

#: status -> (message, type) of MiMo's wrapped error shape. 429's is MiMo's documented one.
_ERRORS: Final[dict[int, tuple[str, str]]] = {
    400: ("Param Incorrect", ""),
    401: ("Invalid API Key", "authentication_error"),
    402: ("Insufficient account funds", "insufficient_balance"),
    403: ("Forbidden", "permission_denied"),
    404: ("Not Found", ""),
    405: ("Method Not Allowed", ""),
    406: ("Not Acceptable", ""),
    413: ("Request Entity Too Large", ""),
    421: ("Content blocked by moderation", "moderation"),
    429: ("Too many requests", "limitation"),
}
# Marks where the streamed base64 goes; made of characters JSON never escapes.
_DATA_MARK: Final = "@@SIM_AUDIO_DATA@@"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def error_body(
    status: int,
    *,
    style: ErrorBodyStyle = ErrorBodyStyle.WRAPPED,
    message: str | None = None,
    param: str | None = None,
) -> tuple[bytes, str]:
    """An error body and its content type, in one of the shapes MiMo (or its proxy) sends."""
    default_message, kind = _ERRORS.get(status, (HTTPStatus(status).phrase, "server_error"))
    if style is ErrorBodyStyle.NOT_JSON:
        title = f"{status} {HTTPStatus(status).phrase}"
        page = (
            f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n"
        )
        return page.encode(), HTML_TYPE
    if style is ErrorBodyStyle.UNWRAPPED:
        # The one documented unwrapped body says "server_error" (even for missing funds).
        text = message or f"Upstream request failed: {default_message}"
        return _dumps({"type": "server_error", "message": text}), JSON_TYPE
    error: dict[str, Any] = {"code": str(status), "message": message or default_message}
    if param is not None:
        error["param"] = param
    error["type"] = kind
    return _dumps({"error": error}), JSON_TYPE


def text_tokens(text: str) -> int:
    """The simulator's token count for text: one per 4 bytes of UTF-8."""
    return math.ceil(len(text.encode("utf-8")) / 4)


def audio_tokens(seconds: float) -> int:
    return round(seconds * AUDIO_TOKENS_PER_S)


def speech_usage(text: str, instructions: str | None, duration_s: float) -> dict[str, Any]:
    """Usage of a TTS answer: text in, audio tokens out, no reasoning."""
    text_in = text_tokens(text) + text_tokens(instructions or "")
    prompt = PROMPT_OVERHEAD_TOKENS + text_in
    completion = audio_tokens(duration_s)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "text_tokens": prompt},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": completion},
    }


def transcription_usage(duration_s: float, transcript: str) -> dict[str, Any]:
    """Usage of an ASR answer, with the ``seconds`` of audio heard."""
    audio = audio_tokens(duration_s)
    prompt = audio + PROMPT_OVERHEAD_TOKENS
    completion = max(1, text_tokens(transcript))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {
            "cached_tokens": 0,
            "audio_tokens": audio,
            "text_tokens": PROMPT_OVERHEAD_TOKENS,
        },
        "completion_tokens_details": {"reasoning_tokens": 0},
        "seconds": round(duration_s, 3),
    }


def _completion(model: str, message: dict[str, Any], usage: dict[str, Any] | None) -> bytes:
    body: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
    }
    if usage is not None:
        body["usage"] = usage
    return _dumps(body)


def _speech_message(data: object) -> dict[str, Any]:
    audio: dict[str, Any] = {"id": f"audio_{uuid.uuid4().hex}"}
    if data is not EmptyAudio.MISSING:
        audio["data"] = None if data is EmptyAudio.NULL else data
    audio.update(expires_at=None, transcript=None)
    return {"role": "assistant", "content": "", "audio": audio}


def speech_frame(model: str, usage: dict[str, Any] | None) -> tuple[bytes, bytes]:
    """The TTS body before and after the base64 text of ``audio.data`` (streamed between)."""
    body = _completion(model, _speech_message(_DATA_MARK), usage)
    head, _, tail = body.partition(_DATA_MARK.encode())
    return head, tail


def speech_without_audio(model: str, usage: dict[str, Any] | None, mode: EmptyAudio) -> bytes:
    """A 200 TTS body whose ``audio.data`` is empty, null or missing (a provider fault)."""
    return _completion(model, _speech_message("" if mode is EmptyAudio.EMPTY else mode), usage)


def transcription_answer(model: str, transcript: str, usage: dict[str, Any] | None) -> bytes:
    """An ASR answer: the transcript is the plain ``content`` string."""
    return _completion(model, {"role": "assistant", "content": transcript}, usage)
