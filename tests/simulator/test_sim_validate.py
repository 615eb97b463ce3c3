"""validate: every MiMo request rule, refused with the status and reason MiMo would give."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from mimoq.core import dialect_constants as dc
from mimoq.sim.validate import (
    NO_ASSISTANT,
    OutputFormat,
    SimRequestError,
    SpeechRequest,
    TranscriptionRequest,
    decode_audio_uri,
    parse_json,
    validate_request,
)
from tests.simulator.sim_helpers import MP3_URI, WAV_URI, asr, stdlib_wav, tts

VOICE = dc.VOICEDESIGN_MODEL
CLONE = dc.VOICECLONE_MODEL

REFUSED: list[tuple[str, object, int, str]] = [
    # (case, body, status, text the reason must contain)
    ("not an object", [1, 2], 400, "JSON object"),
    ("no model", {"messages": []}, 400, "model is required"),
    ("unknown model", tts(model="mimo-v2-tts"), 404, "mimo-v2-tts"),
    ("chat model", tts(model="mimo-v2.5"), 404, "mimo-v2.5"),
    ("stream", tts(stream=True), 400, "stream"),
    ("no messages", {"model": dc.TTS_MODEL}, 400, "messages"),
    ("empty messages", {"model": dc.TTS_MODEL, "messages": []}, 400, "messages"),
    (
        "bad role",
        {"model": dc.TTS_MODEL, "messages": [{"role": "bot", "content": "x"}]},
        400,
        "role",
    ),
    ("no content", {"model": dc.TTS_MODEL, "messages": [{"role": "assistant"}]}, 400, "content"),
    ("text in user message", tts(text=None, user="Hello there."), 400, NO_ASSISTANT),
    ("blank text", tts(text="   "), 400, "must not be empty"),
    ("non-string text", tts(text=42), 400, "must be a string"),
    ("audio not object", tts(audio="wav"), 400, "audio must be an object"),
    ("mp3 format", tts(audio={"format": "mp3"}), 400, "wav or pcm16"),
    ("pcm format", tts(audio={"format": "pcm"}), 400, "wav or pcm16"),
    ("unknown voice", tts(audio={"voice": "alloy"}), 400, "alloy"),
    ("design without description", tts(model=VOICE), 400, "describing the voice"),
    ("design with blank description", tts(model=VOICE, user="  "), 400, "describing the voice"),
    (
        "design with voice",
        tts(model=VOICE, user="A deep voice", audio={"voice": "Mia"}),
        400,
        "not supported",
    ),
    (
        "design preview not bool",
        tts(model=VOICE, user="Deep", audio={"optimize_text_preview": "yes"}),
        400,
        "boolean",
    ),
    ("clone without voice", tts(model=CLONE), 400, "required"),
    ("clone with preset", tts(model=CLONE, audio={"voice": "Mia"}), 400, "data:audio/wav"),
    (
        "clone with flac",
        tts(model=CLONE, audio={"voice": "data:audio/flac;base64,AAAA"}),
        400,
        "data:audio/wav",
    ),
    (
        "clone with alias mime",
        tts(model=CLONE, audio={"voice": "data:audio/x-wav;base64,AAAA"}),
        400,
        "data:audio/wav",
    ),
    (
        "clone not base64",
        tts(model=CLONE, audio={"voice": "data:audio/wav;base64,@@@@"}),
        400,
        "not valid base64",
    ),
    (
        "clone bad padding",
        tts(model=CLONE, audio={"voice": "data:audio/wav;base64,AAA"}),
        400,
        "not valid base64",
    ),
    (
        "clone wav that is not wav",
        tts(
            model=CLONE,
            audio={"voice": "data:audio/wav;base64," + base64.b64encode(b"hello world!").decode()},
        ),
        400,
        "not a valid wav",
    ),
    (
        "clone too big",
        tts(model=CLONE, audio={"voice": WAV_URI + "A" * dc.MAX_AUDIO_B64_CHARS}),
        400,
        "exceeds",
    ),
    (
        "asr without audio",
        {"model": dc.ASR_MODEL, "messages": [{"role": "user", "content": "hi"}]},
        400,
        "input_audio part",
    ),
    (
        "asr audio in assistant",
        {
            "model": dc.ASR_MODEL,
            "messages": [
                {
                    "role": "assistant",
                    "content": [{"type": "input_audio", "input_audio": {"data": WAV_URI}}],
                }
            ],
        },
        400,
        "input_audio part",
    ),
    (
        "asr part without data",
        {
            "model": dc.ASR_MODEL,
            "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}],
        },
        400,
        "input_audio.data",
    ),
    ("asr plain base64", asr(uri=WAV_URI.split(",", 1)[1]), 400, "data:audio/wav"),
    ("asr ogg", asr(uri="data:audio/ogg;base64,T2dnUw=="), 400, "data:audio/wav"),
    ("asr invalid base64", asr(uri="data:audio/wav;base64,UklGR!!!"), 400, "not valid base64"),
    (
        "asr mp3 that is not mp3",
        asr(uri="data:audio/mpeg;base64," + base64.b64encode(b"RIFF").decode()),
        400,
        "not a valid mp3",
    ),
    (
        "asr over the limit",
        asr(uri=WAV_URI + "A" * (dc.MAX_AUDIO_B64_CHARS - len(WAV_URI) + 4)),
        400,
        "exceeds",
    ),
    ("asr bad language", asr(options={"language": "fr"}), 400, "auto, zh, en"),
    ("asr options not object", asr(options="en"), 400, "asr_options"),
]


@pytest.mark.parametrize(
    ("body", "status", "reason"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED]
)
def test_refused(body: object, status: int, reason: str) -> None:
    with pytest.raises(SimRequestError) as caught:
        validate_request(body)
    assert caught.value.status == status
    assert reason in caught.value.param


def test_text_longer_than_the_configured_limit_is_refused() -> None:
    validate_request(tts(text="x" * 10), max_text_chars=10)
    with pytest.raises(SimRequestError, match="exceeds 10"):
        validate_request(tts(text="x" * 11), max_text_chars=10)


def test_uri_at_exactly_the_limit_is_accepted() -> None:
    # Pad the WAV with a trailing junk chunk so the URI is exactly MAX_AUDIO_B64_CHARS long.
    room = (dc.MAX_AUDIO_B64_CHARS - len("data:audio/wav;base64,")) // 4 * 3 - len(stdlib_wav()) - 8
    junk = b"junk" + room.to_bytes(4, "little") + b"\x00" * room
    uri = "data:audio/wav;base64," + base64.b64encode(stdlib_wav() + junk).decode()
    assert len(uri) <= dc.MAX_AUDIO_B64_CHARS
    assert decode_audio_uri(uri, "x")[0] == "audio/wav"


ACCEPTED: list[tuple[str, dict[str, Any], object]] = [
    (
        "preset tts",
        tts(user="Warm narration.", audio={"format": "wav", "voice": "Mia"}),
        SpeechRequest(dc.TTS_MODEL, "Hello there.", "Warm narration.", OutputFormat.WAV, "Mia"),
    ),
    ("defaults", tts(), SpeechRequest(dc.TTS_MODEL, "Hello there.", None, OutputFormat.WAV, None)),
    (
        "chinese voice pcm16",
        tts(audio={"format": "pcm16", "voice": "冰糖"}),
        SpeechRequest(dc.TTS_MODEL, "Hello there.", None, OutputFormat.PCM16, "冰糖"),
    ),
    (
        "text parts",
        tts(text=[{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]),
        SpeechRequest(dc.TTS_MODEL, "Hello", None, OutputFormat.WAV, None),
    ),
    (
        "voice design",
        tts(model=VOICE, user="A calm old man", audio={"optimize_text_preview": False}),
        SpeechRequest(VOICE, "Hello there.", "A calm old man", OutputFormat.WAV, None),
    ),
    (
        "voice clone mp3",
        tts(model=CLONE, audio={"voice": MP3_URI}),
        SpeechRequest(CLONE, "Hello there.", None, OutputFormat.WAV, None),
    ),
    (
        "voice clone wav",
        tts(model=CLONE, audio={"voice": WAV_URI}),
        SpeechRequest(CLONE, "Hello there.", None, OutputFormat.WAV, None),
    ),
    (
        "asr default language",
        asr(),
        TranscriptionRequest(dc.ASR_MODEL, "audio/wav", stdlib_wav(), "auto"),
    ),
    (
        "asr zh mp3",
        asr(uri=MP3_URI, options={"language": "zh"}),
        TranscriptionRequest(dc.ASR_MODEL, "audio/mpeg", b"ID3\x04" + b"\x00" * 60, "zh"),
    ),
    (
        "asr uppercase mime",
        asr(uri=WAV_URI.replace("audio/wav", "AUDIO/WAV"), options={}),
        TranscriptionRequest(dc.ASR_MODEL, "audio/wav", stdlib_wav(), "auto"),
    ),
]


@pytest.mark.parametrize(
    ("body", "expected"), [a[1:] for a in ACCEPTED], ids=[a[0] for a in ACCEPTED]
)
def test_accepted(body: dict[str, Any], expected: object) -> None:
    assert validate_request(body) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [(b"", "empty"), (b"  \n", "empty"), (b"{nope", "not valid JSON"), (b"\xff\xfe", "JSON")],
)
def test_parse_json_refuses_non_json(raw: bytes, reason: str) -> None:
    with pytest.raises(SimRequestError, match=reason):
        parse_json(raw)
