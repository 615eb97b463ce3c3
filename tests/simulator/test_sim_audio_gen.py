"""audio_gen: the generated WAV/PCM is valid, sized by the text, and streams as exact base64."""

from __future__ import annotations

import base64
import io
import struct
import wave

import pytest

from mimoq.core.audio import MIMO_PCM
from mimoq.sim.audio_gen import (
    MAX_COMMENT_BYTES,
    SpeechAudio,
    info_chunk,
    iter_base64,
    plan_speech,
    speech_duration_s,
    tone_period,
)
from mimoq.sim.audio_read import parse_wav


def _plan(
    text: str,
    *,
    wav: bool = True,
    sample_rate: int = 24_000,
    data_bytes: int | None = None,
    embed_text: bool = True,
) -> SpeechAudio:
    return plan_speech(
        text,
        wav=wav,
        sample_rate=sample_rate,
        seconds_per_char=0.06,
        min_s=0.3,
        data_bytes=data_bytes,
        embed_text=embed_text,
    )


def _decoded(audio: SpeechAudio, chunk_bytes: int = 4096) -> bytes:
    return base64.b64decode(b"".join(iter_base64(audio, chunk_bytes)), validate=True)


@pytest.mark.parametrize(
    ("text", "expected_s"),
    [("", 0.3), ("Hi", 0.3), ("x" * 5, 0.3), ("x" * 6, 0.36), ("x" * 100, 6.0), ("你好" * 10, 1.2)],
)
def test_duration_is_seconds_per_char_with_a_floor(text: str, expected_s: float) -> None:
    assert speech_duration_s(text, 0.06, 0.3) == pytest.approx(expected_s)


@pytest.mark.parametrize("rate", [8_000, 16_000, 24_000, 44_100, 48_000])
@pytest.mark.parametrize("text", ["Hello there.", "A much longer sentence. " * 20, "冰糖说你好"])
def test_wav_parses_with_stdlib_wave(rate: int, text: str) -> None:
    audio = _plan(text, sample_rate=rate)
    raw = _decoded(audio)
    assert len(raw) == audio.total_bytes
    with wave.open(io.BytesIO(raw)) as wav:
        assert wav.getframerate() == rate
        assert wav.getnchannels() == 1
        assert wav.getsampwidth() == 2
        expected_frames = round(speech_duration_s(text, 0.06, 0.3) * rate)
        assert wav.getnframes() == expected_frames
        assert wav.readframes(expected_frames) == raw[len(audio.header) :]


def test_duration_grows_with_text() -> None:
    durations = [_plan("word " * n).duration_s for n in (1, 10, 100, 1000)]
    assert durations == sorted(durations) and len(set(durations)) == 4


def test_the_text_chunk_comes_before_data_and_reads_back() -> None:
    text = "Grüße, 世界! (whispering)"
    raw = _decoded(_plan(text))
    assert raw.index(b"LIST") < raw.index(b"data")
    assert parse_wav(raw).comment == text
    riff_size = struct.unpack_from("<I", raw, 4)[0]
    assert riff_size == len(raw) - 8


def test_without_the_text_chunk_the_header_is_canonical() -> None:
    audio = _plan("Hello", embed_text=False)
    assert len(audio.header) == 44
    assert parse_wav(_decoded(audio)).comment is None


def test_a_huge_text_is_cut_in_the_wav_so_readers_can_buffer_the_header() -> None:
    text = "语" * MAX_COMMENT_BYTES  # 3 bytes each in UTF-8
    raw = _decoded(_plan(text, data_bytes=100))
    comment = parse_wav(raw).comment
    assert comment is not None and text.startswith(comment)
    assert MAX_COMMENT_BYTES - 3 < len(comment.encode()) <= MAX_COMMENT_BYTES


@pytest.mark.parametrize("text", ["a", "ab", "abc", "abcd"])
def test_info_chunk_is_word_aligned(text: str) -> None:
    chunk = info_chunk(text)
    assert len(chunk) % 2 == 0
    assert struct.unpack_from("<I", chunk, 4)[0] == len(chunk) - 8


def test_pcm16_is_raw_24khz_samples_whatever_the_wav_rate() -> None:
    audio = _plan("Hello there.", wav=False, sample_rate=16_000)
    raw = _decoded(audio)
    samples = round(speech_duration_s("Hello there.", 0.06, 0.3) * 24_000)
    assert audio.header == b"" and audio.fmt == MIMO_PCM
    assert len(raw) == samples * 2
    assert not raw.startswith(b"RIFF")


@pytest.mark.parametrize("forced", [0, 1, 2, 3, 1001, 250_000])
def test_forced_size_is_whole_samples(forced: int) -> None:
    audio = _plan("x", data_bytes=forced)
    assert audio.data_bytes == forced - forced % 2
    raw = _decoded(audio)
    assert len(raw) == audio.total_bytes
    assert parse_wav(raw).data_bytes == audio.data_bytes


@pytest.mark.parametrize("chunk_bytes", [1, 500, 4096, 65_536, 1 << 20])
@pytest.mark.parametrize("header_text", ["", "a", "ab", "abc" * 1000])
def test_chunking_never_changes_the_bytes(chunk_bytes: int, header_text: str) -> None:
    """Whatever the chunk size and header length, the stream decodes to header + tone."""
    audio = _plan(header_text or "x", data_bytes=12_345 * 2)
    chunks = list(iter_base64(audio, chunk_bytes))
    assert all(len(c) % 4 == 0 for c in chunks)  # every chunk decodes on its own
    raw = b"".join(base64.b64decode(c, validate=True) for c in chunks)
    period = tone_period(24_000)
    expected_data = (period * (audio.data_bytes // len(period) + 1))[: audio.data_bytes]
    assert raw == audio.header + expected_data
    assert sum(len(c) for c in chunks) == audio.b64_chars


def test_big_audio_reuses_one_chunk_object() -> None:
    """Many megabytes of audio cost a handful of distinct chunk objects, not their base64."""
    audio = _plan("x", data_bytes=5 << 20)
    chunks = list(iter_base64(audio, 64 * 1024))  # kept alive, so ids cannot be recycled
    assert sum(len(c) for c in chunks) == audio.b64_chars
    assert len(chunks) > 60 and len({id(c) for c in chunks}) <= 4


def test_tone_is_not_silence_and_fits_16_bits() -> None:
    period = tone_period(24_000)
    values = struct.unpack(f"<{len(period) // 2}h", period)
    assert max(values) > 1000 and min(values) < -1000
