"""audio_read: WAV chunk walking, MP3 sniffing and the predictable transcripts."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest

from mimoq.core.audio import AudioFormatError
from mimoq.sim.audio_gen import iter_base64, plan_speech
from mimoq.sim.audio_read import assumed_mp3_duration_s, hear, looks_like_mp3, parse_wav
from tests.simulator.sim_helpers import stdlib_wav


def _spoken(text: str) -> bytes:
    audio = plan_speech(text, wav=True, sample_rate=16_000, seconds_per_char=0.06, min_s=0.3)
    return base64.b64decode(b"".join(iter_base64(audio)))


@pytest.mark.parametrize(
    ("rate", "frames", "channels", "seconds"),
    [(16_000, 64_000, 1, 4.0), (24_000, 12_000, 1, 0.5), (44_100, 44_100, 2, 1.0)],
)
def test_parse_wav_reads_format_and_duration(
    rate: int, frames: int, channels: int, seconds: float
) -> None:
    info = parse_wav(stdlib_wav(rate, frames, channels))
    fmt = info.fmt
    assert (fmt.sample_rate, fmt.channels, fmt.bits_per_sample) == (rate, channels, 16)
    assert info.duration_s == pytest.approx(seconds)
    assert info.comment is None


def test_streaming_size_placeholder_is_clamped_to_the_bytes_present() -> None:
    raw = bytearray(stdlib_wav(16_000, 1000))
    struct.pack_into("<I", raw, 40, 0xFFFFFFFF)  # what streaming writers put in data's size
    assert parse_wav(bytes(raw)).data_bytes == 2000


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"RIFF\x00\x00\x00\x00WAVX",
        b"ID3\x03\x00\x00\x00",
        b"RIFF\x04\x00\x00\x00WAVE",  # no chunks at all
        stdlib_wav(16_000, 10)[:20],  # fmt chunk cut short
        stdlib_wav(16_000, 10)[:36],  # fmt but no data chunk
    ],
)
def test_not_a_wav_is_refused(raw: bytes) -> None:
    with pytest.raises(AudioFormatError):
        parse_wav(raw)


@pytest.mark.parametrize(
    ("raw", "is_mp3"),
    [
        (b"ID3\x04\x00rest", True),
        (b"\xff\xfb\x90\x00", True),  # MPEG-1 layer III frame sync
        (b"\xff\xf3", True),
        (b"RIFF....WAVE", False),
        (b"\xff\x00", False),
        (b"", False),
    ],
)
def test_mp3_sniffing(raw: bytes, is_mp3: bool) -> None:
    assert looks_like_mp3(raw) is is_mp3


def test_own_wav_is_heard_as_its_text() -> None:
    heard = hear("audio/wav", _spoken("Hello there, 你好."))
    assert heard.transcript == "Hello there, 你好."
    assert heard.duration_s == pytest.approx(max(0.3, 0.06 * len("Hello there, 你好.")))


def test_foreign_wav_is_heard_as_duration_and_digest() -> None:
    raw = stdlib_wav(16_000, 16_000 * 12 + 5_440)  # 12.34 s
    heard = hear("audio/wav", raw)
    assert heard.transcript == f"[audio 12.34s sha1:{hashlib.sha1(raw).hexdigest()[:8]}]"
    assert heard.duration_s == pytest.approx(12.34)


def test_mp3_duration_is_estimated_at_128_kbps() -> None:
    raw = b"ID3" + b"\x00" * (16_000 * 3 - 3)  # 48,000 bytes = 3 s at 128 kbps
    heard = hear("audio/mpeg", raw)
    assert assumed_mp3_duration_s(len(raw)) == pytest.approx(3.0)
    assert heard.transcript.startswith("[audio 3.00s sha1:")
