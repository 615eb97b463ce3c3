"""Request builders shared by the simulator tests (MiMo-dialect bodies, WAV data URIs)."""

from __future__ import annotations

import base64
import io
import wave
from typing import Any

from mimoq.core import dialect_constants as dc


def stdlib_wav(rate: int = 16_000, frames: int = 1_600, channels: int = 1) -> bytes:
    """A plain 16-bit WAV written by the stdlib ``wave`` module (no LIST chunk)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x00" * frames * channels)
    return buf.getvalue()


def data_uri(audio: bytes, mime: str = "audio/wav") -> str:
    return f"data:{mime};base64," + base64.b64encode(audio).decode()


WAV_URI = data_uri(stdlib_wav())
MP3_URI = data_uri(b"ID3\x04" + b"\x00" * 60, "audio/mpeg")


def tts(
    model: str = dc.TTS_MODEL,
    text: Any = "Hello there.",
    user: Any = None,
    audio: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    """A TTS request: ``user`` (instructions) before the assistant ``text``."""
    messages: list[dict[str, Any]] = []
    if user is not None:
        messages.append({"role": "user", "content": user})
    if text is not None:
        messages.append({"role": "assistant", "content": text})
    body: dict[str, Any] = {"model": model, "messages": messages, **extra}
    if audio is not None:
        body["audio"] = audio
    return body


def asr(uri: Any = WAV_URI, options: Any = None, **extra: Any) -> dict[str, Any]:
    """An ASR request with one ``input_audio`` part."""
    part = {"type": "input_audio", "input_audio": {"data": uri}}
    body: dict[str, Any] = {
        "model": dc.ASR_MODEL,
        "messages": [{"role": "user", "content": [part]}],
        **extra,
    }
    if options is not None:
        body["asr_options"] = options
    return body
