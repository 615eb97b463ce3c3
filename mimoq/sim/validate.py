"""The simulator's request checks: MiMo's rules, refused the way MiMo refuses them.

Only ``messages must contain an assistant role for TTS model`` is MiMo's documented
wording; the other ``param`` texts are the simulator's own, in the same style.
"""

from __future__ import annotations

import binascii
import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pybase64

from mimoq.core import dialect_constants as dc
from mimoq.core.audio import AudioFormatError
from mimoq.sim.audio_read import looks_like_mp3, parse_wav

NO_ASSISTANT = "messages must contain an assistant role for TTS model"
_DATA_URI = re.compile(r"^data:(audio/wav|audio/mpeg);base64,", re.IGNORECASE)
_ROLES = ("system", "user", "assistant")


class SimRequestError(Exception):
    """A request MiMo would refuse: ``status`` and the ``param`` that explains why."""

    def __init__(self, param: str, *, status: int = 400) -> None:
        super().__init__(param)
        self.param = param
        self.status = status


class OutputFormat(StrEnum):
    WAV = "wav"
    PCM16 = "pcm16"


@dataclass(frozen=True)
class SpeechRequest:
    """A valid TTS request, reduced to what the answer depends on."""

    model: str
    text: str
    instructions: str | None
    format: OutputFormat
    voice: str | None


@dataclass(frozen=True)
class TranscriptionRequest:
    """A valid ASR request with its audio decoded."""

    model: str
    mime: str
    audio: bytes
    language: str


def parse_json(body: bytes) -> Any:
    """The request's JSON value; a 400 when the body is empty or not JSON."""
    if not body.strip():
        raise SimRequestError("request body is empty: send a JSON object")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise SimRequestError("request body is not valid JSON") from None


def decode_audio_uri(uri: object, where: str) -> tuple[str, bytes]:
    """Check and decode a ``data:audio/wav|mpeg;base64,`` URI: its MIME type and bytes."""
    if not isinstance(uri, str) or not uri:
        raise SimRequestError(f"{where} must be a data URI (data:audio/wav;base64,...)")
    if len(uri) > dc.MAX_AUDIO_B64_CHARS:
        raise SimRequestError(f"{where} exceeds {dc.MAX_AUDIO_B64_CHARS} characters of base64")
    found = _DATA_URI.match(uri)
    if found is None:
        raise SimRequestError(f"{where} must be data:audio/wav;base64 or data:audio/mpeg;base64")
    mime = found.group(1).lower()
    try:
        audio = pybase64.b64decode(uri[found.end() :], validate=True)
    except (binascii.Error, ValueError):
        raise SimRequestError(f"{where} is not valid base64") from None
    if mime == "audio/wav":
        try:
            parse_wav(audio)
        except AudioFormatError:
            raise SimRequestError(f"{where} is not a valid wav file") from None
    elif not looks_like_mp3(audio):
        raise SimRequestError(f"{where} is not a valid mp3 file")
    return mime, audio


def _text(content: object, where: str) -> str:
    # Content is a string, or OpenAI-style parts of which only text parts can be spoken.
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in content
    ):
        return "".join(p["text"] for p in content)
    raise SimRequestError(f"{where} content must be a string")


def _messages(data: dict[str, Any]) -> list[dict[str, Any]]:
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise SimRequestError("messages must be a non-empty array")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise SimRequestError(f"messages[{i}].role must be one of {', '.join(_ROLES)}")
        if "content" not in message:
            raise SimRequestError(f"messages[{i}].content is required")
    return messages


def _speech(data: dict[str, Any], model: str, max_text_chars: int | None) -> SpeechRequest:
    messages = _messages(data)
    spoken = [m for m in messages if m["role"] == "assistant"]
    if not spoken:
        raise SimRequestError(NO_ASSISTANT)
    text = _text(spoken[-1]["content"], "assistant message")
    if not text.strip():
        raise SimRequestError("assistant message content must not be empty")
    if max_text_chars is not None and len(text) > max_text_chars:
        raise SimRequestError(f"assistant message exceeds {max_text_chars} characters")
    users = [_text(m["content"], "user message") for m in messages if m["role"] == "user"]
    instructions = "\n".join(users) or None
    audio = data.get("audio", {})
    if not isinstance(audio, dict):
        raise SimRequestError("audio must be an object")
    fmt = audio.get("format", OutputFormat.WAV.value)
    if fmt not in tuple(OutputFormat):
        raise SimRequestError("audio.format must be wav or pcm16")
    voice = audio.get("voice")
    if model == dc.VOICEDESIGN_MODEL:
        if instructions is None or not instructions.strip():
            raise SimRequestError("voice design requires a user message describing the voice")
        if voice is not None:
            raise SimRequestError("audio.voice is not supported by the voice design model")
        preview = audio.get("optimize_text_preview", False)
        if not isinstance(preview, bool):
            raise SimRequestError("audio.optimize_text_preview must be a boolean")
    elif model == dc.VOICECLONE_MODEL:
        if voice is None:
            raise SimRequestError("audio.voice is required for the voice clone model")
        decode_audio_uri(voice, "audio.voice")
    elif voice is not None and voice not in dc.PRESET_VOICES:
        raise SimRequestError(f"audio.voice {voice!r} is not a preset voice")
    return SpeechRequest(
        model=model,
        text=text,
        instructions=instructions,
        format=OutputFormat(fmt),
        voice=voice if model == dc.TTS_MODEL else None,
    )


def _audio_part(messages: list[dict[str, Any]]) -> object:
    for message in messages:
        if message["role"] != "user" or not isinstance(message["content"], list):
            continue
        for part in message["content"]:
            if isinstance(part, dict) and part.get("type") == "input_audio":
                audio = part.get("input_audio")
                if not isinstance(audio, dict) or "data" not in audio:
                    raise SimRequestError("input_audio.data is required")
                return audio["data"]
    raise SimRequestError("messages must contain an input_audio part for ASR model")


def _transcription(data: dict[str, Any], model: str) -> TranscriptionRequest:
    uri = _audio_part(_messages(data))
    options = data.get("asr_options", {})
    if not isinstance(options, dict):
        raise SimRequestError("asr_options must be an object")
    language = options.get("language", "auto")
    if language not in dc.ASR_LANGUAGES:
        raise SimRequestError(f"asr_options.language must be one of {', '.join(dc.ASR_LANGUAGES)}")
    mime, audio = decode_audio_uri(uri, "input_audio.data")
    return TranscriptionRequest(model=model, mime=mime, audio=audio, language=language)


def validate_request(
    data: object, *, max_text_chars: int | None = None
) -> SpeechRequest | TranscriptionRequest:
    """Check a chat-completions body as MiMo would; raises ``SimRequestError``."""
    if not isinstance(data, dict):
        raise SimRequestError("request body must be a JSON object")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise SimRequestError("model is required")
    if model not in dc.ALL_MODELS:
        raise SimRequestError(f"model {model} does not exist or is not supported", status=404)
    if data.get("stream") is True:
        # MiMo streams audio as SSE (all of it at the end); the simulator does not: say so.
        raise SimRequestError("stream is not supported by the simulator")
    if model == dc.ASR_MODEL:
        return _transcription(data, model)
    return _speech(data, model, max_text_chars)
