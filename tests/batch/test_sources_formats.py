"""Recordings as people have them: telephone WAV, MPEG-2/2.5 and VBR MP3, wrong names, cut files.

Every file is made here by the tools that make them in the wild (sox, lame, libsndfile),
and judged by what ``inspect_audio`` (both edges' check) says about it.
"""

from __future__ import annotations

import base64
import io
import random
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile

from mimoq.core.audio import WavFormat, wav_header
from mimoq.core.errors import InvalidRequestError
from mimoq.core.sources import inspect_audio, sniff
from mimoq.core.splitting.mp3 import mp3_duration_s
from tests.support.speech import RATE, lame, need, sox

SECONDS = 3.0
#: Local files are read only inside the input roots: every file here is under /tmp.
ROOTS = (Path(tempfile.gettempdir()).resolve(),)


@pytest.fixture(scope="module")
def speech16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s of 16-bit PCM at 16 kHz: a warbling tone, loud enough for every codec."""
    t = np.arange(int(SECONDS * RATE)) / RATE
    samples = 0.4 * np.sin(2 * np.pi * (300 + 80 * np.sin(2 * np.pi * 3 * t)) * t)
    path = tmp_path_factory.mktemp("src") / "speech.wav"
    soundfile.write(path, samples.astype(np.float32), RATE, subtype="PCM_16")
    return path


@pytest.mark.parametrize(
    "encoding",
    [
        ("-e", "u-law", "-r", "8000"),  # G.711 mu-law, WAV format tag 7: telephone audio
        ("-e", "a-law", "-r", "8000"),  # G.711 A-law, tag 6
        ("-e", "ima-adpcm", "-r", "8000"),
        ("-e", "ms-adpcm"),
        ("-b", "24"),
        ("-b", "32"),
        ("-e", "floating-point", "-b", "32"),
    ],
    ids=["ulaw", "alaw", "ima-adpcm", "ms-adpcm", "int24", "int32", "float32"],
)
def test_wav_encodings_mimo_is_not_sent_as_they_are_are_decoded(
    speech16: Path, tmp_path: Path, encoding: tuple[str, ...]
) -> None:
    need("sox")
    path = sox(speech16, tmp_path / "call.wav", *encoding)
    audio = inspect_audio(str(path), param="file", roots=ROOTS)
    assert audio.decode and audio.mime == "audio/wav"
    assert audio.duration_s == pytest.approx(SECONDS, abs=0.05)


def test_plain_pcm_wav_goes_as_it_is(speech16: Path) -> None:
    audio = inspect_audio(str(speech16), param="file", roots=ROOTS)
    assert (audio.decode, audio.mime) == (False, "audio/wav")
    assert audio.duration_s == pytest.approx(SECONDS)


@pytest.mark.parametrize(
    "options",
    [
        ("-b", "128"),  # MPEG-1 CBR
        ("--resample", "16", "-b", "32"),  # MPEG-2 layer III
        ("--resample", "8", "-b", "16"),  # MPEG-2.5 layer III
        ("-V", "4"),  # VBR with a Xing header
        ("--resample", "22.05", "-V", "6", "-t"),  # VBR, MPEG-2, no header at all: walked
        ("--resample", "11.025", "-b", "24", "-t"),  # MPEG-2.5 CBR without an Info frame
    ],
    ids=["mpeg1-cbr", "mpeg2", "mpeg2.5", "vbr-xing", "vbr-bare", "mpeg2.5-bare"],
)
def test_mp3_durations_for_every_version_and_vbr(
    speech16: Path, tmp_path: Path, options: tuple[str, ...]
) -> None:
    need("lame")
    path = lame(speech16, tmp_path / "talk.mp3", *options)
    audio = inspect_audio(str(path), param="file", roots=ROOTS)
    assert audio.mime == "audio/mpeg" and not audio.decode
    # The encoder adds its delay and pads the last frame: about 3 frames (0.22 s at 8 kHz).
    assert audio.duration_s == pytest.approx(SECONDS, abs=0.25)
    with open(path, "rb") as f:
        assert mp3_duration_s(f, path.stat().st_size) == audio.duration_s


def test_an_mp3_named_wav_is_sent_as_mp3(speech16: Path, tmp_path: Path) -> None:
    need("lame")
    named = tmp_path / "voicemail.wav"
    named.write_bytes(lame(speech16, tmp_path / "v.mp3", "-V", "5").read_bytes())
    audio = inspect_audio(str(named), param="file", roots=ROOTS)
    assert audio.mime == "audio/mpeg" and not audio.decode
    assert audio.duration_s == pytest.approx(SECONDS, abs=0.15)
    # the same bytes in a data URI labelled WAV: the content decides there too
    uri = "data:audio/wav;base64," + base64.b64encode(named.read_bytes()).decode()
    inline = inspect_audio(uri, param="file", roots=ROOTS)
    assert inline.mime == "audio/mpeg" and inline.data_uri is not None
    assert inline.data_uri.startswith("data:audio/mpeg;base64,")


def test_a_flac_named_wav_is_decoded_and_garbage_is_refused_by_name(
    speech16: Path, tmp_path: Path
) -> None:
    flac = tmp_path / "archive.wav"
    samples, rate = soundfile.read(speech16)
    soundfile.write(flac, samples, rate, format="FLAC")
    assert sniff(flac.read_bytes()[:64]) == "FLAC"
    audio = inspect_audio(str(flac), param="file", roots=ROOTS)
    assert audio.decode and audio.duration_s == pytest.approx(SECONDS)

    notes = tmp_path / "notes.wav"
    notes.write_text("meeting notes, not a recording\n")
    with pytest.raises(InvalidRequestError, match="neither WAV nor MP3") as refused:
        inspect_audio(str(notes), param="file", roots=ROOTS)
    assert refused.value.param == "file"


def test_a_wav_cut_mid_data_is_refused_saying_so(speech16: Path, tmp_path: Path) -> None:
    whole = speech16.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole[:30_000])
    with pytest.raises(InvalidRequestError) as refused:
        inspect_audio(str(cut), param="file", roots=ROOTS)
    message = refused.value.message
    assert "cut short" in message and f"{len(whole) - 44:,} bytes" in message
    assert "29,956 are there" in message and refused.value.param == "file"
    # A streamed WAV (placeholder size) is not "cut": its samples run to the end.
    streamed = tmp_path / "streamed.wav"
    streamed.write_bytes(whole[:40] + struct.pack("<I", 0xFFFFFFFF) + whole[44:30_000])
    assert inspect_audio(str(streamed), param="file", roots=ROOTS).duration_s == pytest.approx(
        (30_000 - 44) / (2 * RATE)
    )


def test_hostile_bytes_behind_a_wav_name_are_refused_never_crash(tmp_path: Path) -> None:
    rng = random.Random(14)
    path = tmp_path / "x.wav"
    for n in range(200):
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
        head = [b"RIFF\x10\x00\x00\x00WAVE", b"\xff\xfb\x90\x64", b"ID3\x04\x00", b""][n % 4]
        path.write_bytes(head + body)
        try:
            inspect_audio(str(path), param="file", roots=ROOTS)
        except InvalidRequestError as exc:
            assert exc.param == "file"


def test_the_producer_edge_reads_a_file_object_once_per_check(speech16: Path) -> None:
    # Inline audio is checked from memory: nothing is written to disk to sniff it.
    data = io.BytesIO(speech16.read_bytes()).getvalue()
    uri = "data:audio/wav;base64," + base64.b64encode(data).decode()
    audio = inspect_audio(uri, param="file", roots=ROOTS)
    assert (audio.mime, audio.decode, audio.path) == ("audio/wav", False, None)


def test_forged_durations_are_capped_by_what_the_bytes_can_hold(tmp_path: Path) -> None:
    # An MP3 whose Xing header claims 4 billion frames; a WAV that says it is 1 Hz.
    frame = bytearray(417)
    frame[:4] = struct.pack(">I", 0xFFFB9000)
    frame[36:48] = b"Xing" + struct.pack(">II", 1, 0xFFFFFFFF)
    audio = bytes(frame) + (struct.pack(">I", 0xFFFB9000) + bytes(413)) * 20
    forged = tmp_path / "forged.mp3"
    forged.write_bytes(audio)
    mp3 = inspect_audio(str(forged), param="file", roots=ROOTS)
    assert mp3.duration_s is not None and mp3.duration_s <= len(audio) / 500
    slow = tmp_path / "slow.wav"
    samples = bytes(20_000)
    slow.write_bytes(wav_header(WavFormat(1, 1, 8), len(samples)) + samples)
    wav = inspect_audio(str(slow), param="file", roots=ROOTS)
    assert wav.duration_s is not None and wav.duration_s <= (len(samples) + 44) / 500
