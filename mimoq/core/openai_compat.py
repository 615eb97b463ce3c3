"""OpenAI's names for what mimoq does: model aliases and Batch API request lines.

``tts-1``, ``tts-1-hd`` and ``gpt-4o-mini-tts`` are general text-to-speech with preset
voices: ``mimo-v2.5-tts`` is that (with MiMo's own presets; OpenAI's voice names are
refused by the usual voice check). ``whisper-1``, ``gpt-4o-transcribe`` and
``gpt-4o-mini-transcribe`` are speech-to-text: ``mimo-v2.5-asr`` is that, for auto, zh and
en. Voice design and voice cloning have no OpenAI name: ask for them by MiMo's. Both the
HTTP front door and ``mimoq batch`` read OpenAI batch lines through here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from mimoq.core import dialect_constants as dc
from mimoq.core.errors import InvalidRequestError

SPEECH_ALIASES: Final = {
    "tts-1": dc.TTS_MODEL,
    "tts-1-hd": dc.TTS_MODEL,
    "gpt-4o-mini-tts": dc.TTS_MODEL,
}
TRANSCRIPTION_ALIASES: Final = {
    "whisper-1": dc.ASR_MODEL,
    "gpt-4o-transcribe": dc.ASR_MODEL,
    "gpt-4o-mini-transcribe": dc.ASR_MODEL,
}
SPEECH_URL: Final = "/v1/audio/speech"
TRANSCRIPTIONS_URL: Final = "/v1/audio/transcriptions"
KIND_OF_URL: Final = {SPEECH_URL: "speech", TRANSCRIPTIONS_URL: "transcription"}


def speech_model(name: object) -> object:
    """The MiMo model for a requested name; anything unknown is left for the job check."""
    return SPEECH_ALIASES.get(name, name) if isinstance(name, str) else name


def transcription_model(name: object) -> object:
    return TRANSCRIPTION_ALIASES.get(name, name) if isinstance(name, str) else name


def is_batch_line(data: Mapping[str, Any]) -> bool:
    """An OpenAI Batch request line (``custom_id``, ``url``, ``body``) rather than a job."""
    return "custom_id" in data and "body" in data and "kind" not in data


def job_from_batch_line(data: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(custom_id, job)`` of an OpenAI Batch line; the job is checked later like any job."""
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise InvalidRequestError("custom_id must be a non-empty string", param="custom_id")
    url = data.get("url")
    kind = KIND_OF_URL.get(url) if isinstance(url, str) else None
    if kind is None:
        raise InvalidRequestError(
            f"url {url!r} is not served here: use {SPEECH_URL} or {TRANSCRIPTIONS_URL}",
            param="url",
        )
    if data.get("method", "POST") != "POST":
        raise InvalidRequestError("method must be POST", param="method")
    body = data.get("body")
    if not isinstance(body, dict):
        raise InvalidRequestError("body must be a JSON object", param="body")
    job = {**body, "kind": kind}
    if "model" in body:
        alias = speech_model if kind == "speech" else transcription_model
        job["model"] = alias(body["model"])
    return custom_id, job
