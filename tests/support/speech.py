"""Real speech and real files, made at test time with Debian's tools (espeak-ng, sox, lame).

``conversation`` speaks sentences with espeak-ng and lays them out with pauses of known
length, returning where each sentence's speech really starts and ends: the timeline that
segment boundaries are judged against. Tests that need a tool call ``need`` and are skipped
cleanly without it; the bench uses the same builders.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile

RATE = 16_000
#: A sample quieter than this is the silence around espeak-ng's speech, not speech.
_EDGE = 10 ** (-50 / 20)

SENTENCES = (
    "Good morning, thanks for calling the support line.",
    "I ordered a blender last week and it still has not arrived.",
    "Let me look that up for you.",
    "Could you give me the order number please?",
    "Sure, it is four seven one, two nine, eight three.",
    "Thank you. I can see the parcel left our warehouse on Tuesday.",
    "It should reach you tomorrow before noon.",
    "That is great news, thank you very much.",
    "Is there anything else I can help you with today?",
    "No, that is all. Have a nice day.",
)


def need(*tools: str) -> None:
    """Skip the calling test when a tool is not installed (CI installs them best effort)."""
    import pytest

    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install {' '.join(missing)})")


def speak(text: str, *, voice: str = "en", speed: int = 165) -> npt.NDArray[np.float32]:
    """``text`` spoken by espeak-ng, as mono float samples at 16 kHz."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "raw.wav", Path(tmp) / "out.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            ["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(out)],
            check=True,
            capture_output=True,
        )
        samples, _ = soundfile.read(out, dtype="float32")
    return np.asarray(samples, dtype=np.float32)


@dataclass(frozen=True)
class Conversation:
    """A recording made of sentences and pauses, and where each sentence's speech is."""

    samples: npt.NDArray[np.float32]
    truth: list[tuple[float, float]]  #: (start_s, end_s) of each sentence's speech

    @property
    def seconds(self) -> float:
        return len(self.samples) / RATE

    def write(self, path: Path, **sf_args: str) -> Path:
        soundfile.write(path, self.samples, RATE, **sf_args)
        return path


def conversation(
    sentences: Sequence[str],
    pauses_s: Sequence[float],
    *,
    lead_s: float = 0.3,
    noise_db: float | None = None,
    seed: int = 14,
) -> Conversation:
    """``sentences`` spoken one after another, ``pauses_s[i]`` of silence after sentence i
    (measured from the end of its speech to the start of the next one's); with
    ``noise_db``, white noise of that RMS level (dBFS) throughout, as a room or line has."""
    parts = [np.zeros(round(lead_s * RATE), dtype=np.float32)]
    truth: list[tuple[float, float]] = []
    clock = lead_s
    for i, text in enumerate(sentences):
        voice = speak(text, voice="en-us" if i % 2 else "en")
        loud = np.flatnonzero(np.abs(voice) > _EDGE)
        voice = voice[loud[0] : loud[-1] + 1] if len(loud) else voice
        truth.append((clock, clock + len(voice) / RATE))
        pause = pauses_s[i % len(pauses_s)]
        parts += [voice, np.zeros(round(pause * RATE), dtype=np.float32)]
        clock += (len(voice) + round(pause * RATE)) / RATE
    samples = np.concatenate(parts)
    if noise_db is not None:
        rng = np.random.default_rng(seed)
        samples = samples + rng.normal(0, 10 ** (noise_db / 20), len(samples)).astype(np.float32)
    return Conversation(samples, truth)


def sox(src: Path, dst: Path, *args: str) -> Path:
    """``sox src [args before dst] dst``: re-encode (``-e u-law -r 8000``, ``-b 24``...)."""
    subprocess.run(["sox", str(src), *args, str(dst)], check=True, capture_output=True)
    return dst


def lame(src: Path, dst: Path, *args: str) -> Path:
    """An MP3 of ``src`` made by lame (``-V 4`` for VBR, ``--resample 8 -b 16`` for MPEG-2.5)."""
    subprocess.run(["lame", "--quiet", *args, str(src), str(dst)], check=True, capture_output=True)
    return dst
