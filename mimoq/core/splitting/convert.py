"""Audio MiMo does not read (flac, ogg, m4a...) converted to 16 kHz mono WAV, streamed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import BinaryIO, Final

from mimoq.core.audio import AudioInfo, AudioSink, WavFormat
from mimoq.core.splitting.chunks import UnsupportedAudioError
from mimoq.core.splitting.resample import SPLIT_FORMAT, Converter

#: Extensions mimoq converts before transcribing (wav and mp3 go to MiMo as they are).
CONVERTIBLE: Final = frozenset(
    {
        ".flac",
        ".ogg",
        ".oga",
        ".opus",
        ".m4a",
        ".mp4",
        ".aac",
        ".aif",
        ".aiff",
        ".caf",
        ".wma",
        ".webm",
        ".amr",
        ".au",
    }
)
_BLOCK_FRAMES: Final = 1 << 16


def _with_soundfile(src: Path, sink: AudioSink) -> bool:
    """Decode with libsndfile (flac, ogg/vorbis/opus, aiff, caf...); False if it can't."""
    try:
        import soundfile  # type: ignore[import-untyped]

        sound = soundfile.SoundFile(str(src))
    except (ImportError, RuntimeError, OSError):
        return False
    with sound:
        converter = Converter(WavFormat(sound.samplerate, sound.channels, 32, 3), SPLIT_FORMAT)
        for block in sound.blocks(blocksize=_BLOCK_FRAMES, dtype="float32", always_2d=True):
            sink.write(converter.convert(block).tobytes())
        sink.write(converter.flush().tobytes())
    return True


def _with_ffmpeg(src: Path, sink: AudioSink, ffmpeg: str) -> None:
    """Decode with an ffmpeg found on PATH (m4a/aac, wma, webm... anything it knows)."""
    command = [
        ffmpeg, "-nostdin", "-v", "error", "-i", str(src),
        "-f", "s16le", "-ac", "1", "-ar", str(SPLIT_FORMAT.sample_rate), "-",
    ]  # fmt: skip
    # An argv list, no shell: the file name is one argument, whatever it contains.
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:  # noqa: S603
        assert proc.stdout is not None and proc.stderr is not None
        while data := proc.stdout.read(1 << 20):
            sink.write(data)
        errors = proc.stderr.read().decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        raise UnsupportedAudioError(f"ffmpeg could not decode {src.name}: {errors[-300:]}")


def convert_to_wav(src: Path, out: BinaryIO) -> AudioInfo:
    """Write ``src`` to ``out`` as 16 kHz mono 16-bit WAV, one block at a time.

    libsndfile (the ``soundfile`` package) is tried first; formats it cannot read go to an
    ``ffmpeg`` on PATH. Raises :class:`UnsupportedAudioError` saying what to install when
    neither can decode the file.
    """
    sink = AudioSink(out, source="pcm", output="wav", pcm_format=SPLIT_FORMAT)
    if not _with_soundfile(src, sink):
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise UnsupportedAudioError(
                f"{src.name}: cannot decode {src.suffix or 'this'} audio without ffmpeg; "
                "install ffmpeg (e.g. apt-get install ffmpeg) or convert it to wav or mp3"
            )
        _with_ffmpeg(src, sink, ffmpeg)
    try:
        return sink.finish()
    except ValueError as exc:
        raise UnsupportedAudioError(f"{src.name}: no audio decoded ({exc})") from None
