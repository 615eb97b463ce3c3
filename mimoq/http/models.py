"""OpenAI model names over HTTP: the honest aliases live in ``mimoq.core.openai_compat``."""

from __future__ import annotations

from mimoq.core.openai_compat import (
    SPEECH_ALIASES,
    TRANSCRIPTION_ALIASES,
    speech_model,
    transcription_model,
)

__all__ = ["SPEECH_ALIASES", "TRANSCRIPTION_ALIASES", "speech_model", "transcription_model"]
