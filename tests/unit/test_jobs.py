"""The job contract: OpenAI field names, and every MiMo refusal named, by table."""

from __future__ import annotations

import pytest

from mimoq.core.errors import InvalidRequestError
from mimoq.core.jobs import SpeechJob, TranscriptionJob, parse_job

CLONE = {"model": "mimo-v2.5-tts-voiceclone"}
DESIGN = {"model": "mimo-v2.5-tts-voicedesign"}


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        (
            {"kind": "speech", "input": "Hi"},
            {"model": "mimo-v2.5-tts", "response_format": "wav", "voice": None},
        ),
        (
            {"kind": "speech", "input": "Hi", "voice": "茉莉", "speed": 1},
            {"voice": "茉莉", "speed": 1.0},
        ),
        (
            {"kind": "speech", "input": "Hi", **DESIGN, "instructions": "A bright voice"},
            {"model": DESIGN["model"]},
        ),
        (
            {"kind": "speech", "input": "Hi", **CLONE, "voice": "sample.mp3"},
            {"voice": "sample.mp3"},
        ),
        (
            {"kind": "speech", "input": "Hi", **CLONE, "voice": "data:audio/x-wav;base64,UklGRg=="},
            {"model": CLONE["model"]},
        ),
        (
            {"kind": "transcription", "file": "a.WAV"},
            {"language": "auto", "response_format": "json"},
        ),
        (
            {
                "kind": "transcription",
                "file": "file:///tmp/a.mp3",
                "language": "zh",
                "response_format": "text",
            },
            {"language": "zh"},
        ),
        (
            {"kind": "transcription", "file": "a.wav", "prompt": "", "timestamp_granularities": []},
            {"prompt": ""},
        ),
        (
            {"kind": "speech", "input": "Hi", "id": "job-1.a_b", "metadata": {"k": [1, "x"]}},
            {"id": "job-1.a_b"},
        ),
        (
            {
                "kind": "speech",
                "input": "Hi",
                "callback": {"url": "https://example.com/hook", "headers": {"X-Token": "t"}},
            },
            {},
        ),
        ({"kind": "speech", "input": "Hi", "output": "books/ch1.wav"}, {"output": "books/ch1.wav"}),
    ],
)
def test_valid_jobs(job: dict, expected: dict) -> None:
    parsed = parse_job(job)
    assert isinstance(parsed, SpeechJob if job["kind"] == "speech" else TranscriptionJob)
    for field, value in expected.items():
        assert getattr(parsed, field) == value


@pytest.mark.parametrize(
    ("job", "param", "says"),
    [
        (
            {"kind": "speech", "input": "Hi", "response_format": "mp3"},
            "response_format",
            "'wav' or 'pcm'",
        ),
        (
            {"kind": "speech", "input": "Hi", "response_format": "opus"},
            "response_format",
            "convert afterwards",
        ),
        (
            {"kind": "speech", "input": "Hi", "response_format": "flac"},
            "response_format",
            "not supported",
        ),
        (
            {"kind": "speech", "input": "Hi", "speed": 1.25},
            "speed",
            "use instructions to adjust pace",
        ),
        ({"kind": "speech", "input": "Hi", "speed": 0.5}, "speed", "absent or 1"),
        ({"kind": "speech", "input": "   "}, "input", "must contain text"),
        ({"kind": "speech", "input": "x" * 200_001}, "input", "mimoq splits texts of up to"),
        ({"kind": "speech"}, "input", "required"),
        ({"kind": "speech", "input": "Hi", "voice": "alloy"}, "voice", "not a preset"),
        ({"kind": "speech", "input": "Hi", "model": "tts-1"}, "model", "not supported"),
        ({"kind": "speech", "input": "Hi", "model": "mimo-v2-flash"}, "model", "not supported"),
        ({"kind": "speech", "input": "Hi", **DESIGN}, "instructions", "required"),
        (
            {"kind": "speech", "input": "Hi", **DESIGN, "instructions": "x", "voice": "Mia"},
            "voice",
            "takes no voice",
        ),
        ({"kind": "speech", "input": "Hi", **CLONE}, "voice", "required"),
        (
            {"kind": "speech", "input": "Hi", **CLONE, "voice": "sample.flac"},
            "voice",
            ".wav or .mp3",
        ),
        (
            {"kind": "speech", "input": "Hi", **CLONE, "voice": "data:audio/ogg;base64,AAAA"},
            "voice",
            "use wav or mp3",
        ),
        (
            {
                "kind": "speech",
                "input": "Hi",
                **CLONE,
                "voice": "data:audio/wav;base64," + "A" * 10_000_000,
            },
            "voice",
            "a voice sample must fit one",
        ),
        (
            {"kind": "speech", "input": "Hi", "optimize_text_preview": True},
            "optimize_text_preview",
            "voicedesign only",
        ),
        (
            {"kind": "speech", "input": "Hi", "stream_format": "sse"},
            "stream_format",
            "not a supported parameter",
        ),
        (
            {"kind": "transcription", "file": "a.wav", "response_format": "verbose_json"},
            "response_format",
            "'json' or 'text'",
        ),
        (
            {"kind": "transcription", "file": "a.wav", "response_format": "srt"},
            "response_format",
            "needs timestamps: 'segment' (CLI --segments)",
        ),
        (
            {"kind": "transcription", "file": "a.wav", "response_format": "vtt"},
            "response_format",
            "needs timestamps: 'segment' (CLI --segments)",
        ),
        (
            {"kind": "transcription", "file": "a.wav", "timestamps": "word"},
            "timestamps",
            "use 'segment'",
        ),
        (
            {"kind": "transcription", "file": "a.wav", "prompt": "Names: Xiaomi"},
            "prompt",
            "not supported",
        ),
        (
            {"kind": "transcription", "file": "a.wav", "timestamp_granularities": ["word"]},
            "timestamp_granularities",
            "no timestamps",
        ),
        (
            {"kind": "transcription", "file": "a.wav", "language": "fr"},
            "language",
            "auto, zh or en",
        ),
        (
            {"kind": "transcription", "file": "a.wav", "temperature": 3},
            "temperature",
            "less than or equal",
        ),
        ({"kind": "transcription", "file": "a.flac"}, "file", ".wav or .mp3"),
        ({"kind": "transcription", "file": "a.m4a"}, "file", ".wav or .mp3"),
        ({"kind": "transcription", "file": "noextension"}, "file", "without extension"),
        (
            {"kind": "transcription", "file": "ftp://example.com/a.wav"},
            "file",
            "s3://, gs://, az:// or https://",
        ),
        (
            {"kind": "transcription", "file": "data:audio/flac;base64,AAAA"},
            "file",
            "use wav or mp3",
        ),
        ({"kind": "transcription", "file": "data:audio/wav,notbase64"}, "file", "base64 data URI"),
        (
            {"kind": "transcription", "file": "data:audio/wav;base64," + "A" * 64_000_001},
            "file",
            "pass a longer recording as a file path",
        ),
        (
            {"kind": "transcription", "file": "a.wav", "model": "whisper-1"},
            "model",
            "mimo-v2.5-asr",
        ),
        ({"kind": "transcription"}, "file", "required"),
        ({"kind": "embedding", "input": "x"}, "kind", "'speech' or 'transcription'"),
        ({"input": "x"}, "kind", "'speech' or 'transcription'"),
        ({"kind": "speech", "input": "Hi", "id": "../etc"}, "id", "1-128 characters"),
        ({"kind": "speech", "input": "Hi", "id": "a" * 129}, "id", "1-128 characters"),
        ({"kind": "speech", "input": "Hi", "output": "/abs.wav"}, "output", "relative path"),
        ({"kind": "speech", "input": "Hi", "output": "a/../../b.wav"}, "output", "relative path"),
        ({"kind": "speech", "input": "Hi", "callback": {"url": "ftp://x"}}, "callback.url", "http"),
        (
            {
                "kind": "speech",
                "input": "Hi",
                "callback": {"url": "https://x", "headers": {"webhook-id": "1"}},
            },
            "callback.headers",
            "mimoq sets it",
        ),
        (
            {"kind": "speech", "input": "Hi", "callback": {"url": "https://x", "secret": "s"}},
            "callback.secret",
            "not a supported parameter",
        ),
        ({"kind": "speech", "input": "Hi", "metadata": {"x": "y" * 20_000}}, "metadata", "16384"),
        # a trailing newline would pass Python's "$" (enqueue.lua refuses it): fullmatch
        ({"kind": "speech", "input": "Hi", "tenant": "alpha\n"}, "tenant", "1-64 characters"),
        ({"kind": "speech", "input": "Hi", "run": "run-1\n"}, "run", "1-128 characters"),
    ],
)
def test_refusals_name_the_parameter(job: dict, param: str, says: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_job(job)
    assert info.value.param == param
    assert says in info.value.message
    assert info.value.to_dict()["type"] == "invalid_request_error"


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_job({"kind": "speech", "input": "Hi", "speed": 2, "response_format": "mp3"})
    assert "speed" in info.value.message and "response_format" in info.value.message


def test_non_object_job() -> None:
    with pytest.raises(InvalidRequestError):
        parse_job(["speech"])  # type: ignore[arg-type]


def test_an_older_model_id_is_accepted_and_becomes_the_model_actually_called() -> None:
    job = parse_job({"kind": "speech", "input": "Hi", "model": "mimo-v2-tts", "voice": "Mia"})
    assert isinstance(job, SpeechJob)
    assert job.model == "mimo-v2.5-tts"
    # The preset-voice rules of the V2.5 model apply to the alias too.
    with pytest.raises(InvalidRequestError) as info:
        parse_job({"kind": "speech", "input": "Hi", "model": "mimo-v2-tts", "voice": "nobody"})
    assert info.value.param == "voice"


def test_an_unknown_model_id_is_still_refused_naming_the_field() -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_job({"kind": "speech", "input": "Hi", "model": "mimo-v1-tts"})
    assert info.value.param == "model"
    assert "mimo-v2.5-tts" in info.value.message
