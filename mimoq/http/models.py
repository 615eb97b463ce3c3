"""OpenAI model names, mapped to MiMo's only where the mapping is honest.

``tts-1``, ``tts-1-hd`` and ``gpt-4o-mini-tts`` are general text-to-speech with preset
voices: ``mimo-v2.5-tts`` is that (with MiMo's own presets; OpenAI's voice names are
refused by the usual voice check). ``whisper-1``, ``gpt-4o-transcribe`` and
``gpt-4o-mini-transcribe`` are speech-to-text: ``mimo-v2.5-asr`` is that, for auto, zh and
en. Voice design and voice cloning have no OpenAI name: ask for them by MiMo's.
"""

from __future__ import annotations

from typing import Final

from mimoq.core import dialect_constants as dc

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


def speech_model(name: object) -> object:
    """The MiMo model for a requested name; anything unknown is left for the job check."""
    return SPEECH_ALIASES.get(name, name) if isinstance(name, str) else name


def transcription_model(name: object) -> object:
    return TRANSCRIPTION_ALIASES.get(name, name) if isinstance(name, str) else name
