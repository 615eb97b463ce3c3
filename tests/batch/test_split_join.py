"""WAV parts joined sample-exactly into one WAV or PCM; other-format audio converted to WAV."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from mimoq.core.audio import WavFormat, parse_wav_header
from mimoq.core.splitting.chunks import UnsupportedAudioError
from mimoq.core.splitting.convert import convert_to_wav
from mimoq.core.splitting.join import join_wavs
from mimoq.core.splitting.resample import SPLIT_FORMAT
from tests.batch.helpers import encode, tones, write_wav

TTS = WavFormat(24_000, 1, 16)


def parts(tmp_path: Path, fmts: list[WavFormat], seconds: list[float]) -> list[Path]:
    return [
        write_wav(tmp_path / f"{i}.wav", tones(fmt.sample_rate, [(s, 0.0)], hz=300 + 100 * i), fmt)
        for i, (fmt, s) in enumerate(zip(fmts, seconds, strict=True))
    ]


@pytest.mark.parametrize("output", ["wav", "pcm"])
@pytest.mark.parametrize("seconds", [[1.0], [0.5, 1.25, 2.0], [0.01, 0.02, 0.03, 3.0]])
def test_same_format_parts_are_concatenated_byte_for_byte(
    tmp_path: Path, output: str, seconds: list[float]
) -> None:
    paths = parts(tmp_path, [TTS] * len(seconds), seconds)
    out = io.BytesIO()
    info = join_wavs(paths, out, output=output)  # type: ignore[arg-type]
    samples = b"".join(p.read_bytes()[44:] for p in paths)
    data = out.getvalue()
    assert (data[44:] if output == "wav" else data) == samples
    assert info.format == TTS and info.data_bytes == len(samples)
    assert info.duration_s == pytest.approx(sum(seconds), abs=1e-4)
    if output == "wav":
        parsed = parse_wav_header(data)
        assert parsed is not None and parsed[0] == TTS and parsed[2] == len(samples)


def test_parts_with_extra_chunks_and_odd_sizes_stay_frame_aligned(tmp_path: Path) -> None:
    from mimoq.sim.audio_gen import wav_header_with_text

    fmt = WavFormat(24_000, 2, 16)
    paths = []
    for i, text in enumerate(["first", "second part"]):
        samples = encode(tones(24_000, [(0.1, 0.0)]), fmt) + b"\x01"  # half a sample too many
        paths.append(tmp_path / f"{i}.wav")
        paths[-1].write_bytes(wav_header_with_text(fmt, len(samples), text) + samples)
    out = io.BytesIO()
    info = join_wavs(paths, out, output="pcm")
    assert info.data_bytes == 2 * 2400 * 4 and len(out.getvalue()) == info.data_bytes


def test_a_part_in_another_format_is_converted_to_the_first(tmp_path: Path) -> None:
    paths = parts(tmp_path, [TTS, WavFormat(48_000, 2, 16), TTS], [1.0, 1.0, 1.0])
    out = io.BytesIO()
    info = join_wavs(paths, out, output="wav")
    assert info.format == TTS
    assert info.duration_s == pytest.approx(3.0, abs=0.002)


def test_nothing_to_join_is_a_bug() -> None:
    with pytest.raises(ValueError):
        join_wavs([], io.BytesIO(), output="wav")


@pytest.mark.parametrize(("fmt", "ext"), [("FLAC", ".flac"), ("OGG", ".ogg"), ("AIFF", ".aiff")])
@pytest.mark.parametrize(("rate", "channels"), [(44_100, 2), (16_000, 1), (8_000, 1)])
def test_convert_to_wav(tmp_path: Path, fmt: str, ext: str, rate: int, channels: int) -> None:
    mono = tones(rate, [(1.5, 0.5)], hz=440)
    src = tmp_path / f"in{ext}"
    soundfile.write(src, np.repeat(mono[:, None], channels, axis=1), rate, format=fmt)
    out = io.BytesIO()
    info = convert_to_wav(src, out)
    assert info.format == SPLIT_FORMAT  # whatever the source's rate and channels
    assert info.duration_s == pytest.approx(2.0, abs=0.03)
    parsed = parse_wav_header(out.getvalue())
    assert parsed is not None and parsed[0] == SPLIT_FORMAT


def test_undecodable_audio_without_ffmpeg_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "voice.m4a"
    src.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(100))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(UnsupportedAudioError, match=r"voice.m4a: .*install ffmpeg"):
        convert_to_wav(src, io.BytesIO())


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not on PATH")
def test_ffmpeg_reports_what_it_could_not_decode(tmp_path: Path) -> None:
    src = tmp_path / "broken.m4a"
    src.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(100))
    with pytest.raises(UnsupportedAudioError, match=r"ffmpeg could not decode broken\.m4a"):
        convert_to_wav(src, io.BytesIO())
