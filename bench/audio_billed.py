"""Audio billed and requests made: plain, --compact-silence and --segments, side by side.

Builds, with espeak-ng and sox, an archive of conversational recordings (sentences with
pauses of 0.5-4 s, seeded) whose sentence timeline is known, and a 60-minute recording of
the same kind. Runs ``mimoq batch`` (the embedded default, a real process) on them against
``mimoq sim`` in its own process, and reads back what was uploaded: the simulator hears a
WAV as ``[audio 12.34s ...]``, so every transcript says how many seconds it was sent, and
``GET /_sim/stats`` counts the requests. Prints, in one run:

* the archive: requests and audio seconds uploaded, plain vs ``--compact-silence`` vs
  ``--segments``, each as a multiple of the recordings' total length (target for
  ``--compact-silence``: <= 0.75x);
* segment boundaries against the known sentence timeline (target: median error < 0.3 s);
* the 60-minute recording: requests and audio seconds with and without ``--segments``.

    .venv/bin/python bench/audio_billed.py [--recordings 6] [--sentences 10] [--minutes 60]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the speech builders live with the tests that use them too

from bench._support import Services, sigterm_as_interrupt  # noqa: E402
from tests.support.speech import RATE, SENTENCES, conversation, speak  # noqa: E402

PAUSE_RANGE_S = (0.5, 4.0)


def heard_seconds(text: str) -> float:
    return sum(float(s) for s in re.findall(r"\[audio (\d+\.\d+)s sha1:", text))


def requests(sim_url: str) -> int:
    stats = httpx.get(sim_url + "/_sim/stats", timeout=10).json()
    return int(stats["requests"].get("mimo-v2.5-asr", 0))


def batch(
    sim_url: str, source: Path, data: Path, *flags: str, workdir: Path
) -> tuple[int, float, list[dict[str, Any]], float]:
    """Run ``mimoq batch``; (requests, seconds uploaded, outputs, wall seconds)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIMO", "REDIS_URL"))}
    env.update(
        MIMO_API_KEY="sk-bench", MIMO_BASE_URL=sim_url + "/v1", MIMOQ_DATA_DIR=str(data),
        MIMOQ_LIMITS_ENABLED="false", MIMOQ_POLL_DELAY_S="0.01", MIMOQ_CONCURRENCY="16",
    )  # fmt: skip
    before = requests(sim_url)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "mimoq.cli", "batch", str(source), "--progress", "none", *flags],
        env=env, cwd=workdir, capture_output=True, text=True, timeout=3600, check=False,
    )  # fmt: skip
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"mimoq batch {' '.join(flags)} failed:\n{done.stderr[-3000:]}")
    outputs = []
    (report,) = data.glob("batches/*/report.jsonl")
    for line in report.read_text().splitlines():
        row = json.loads(line)
        outputs.append({"input": row["input"], **json.loads(Path(row["output"]).read_text())})
    uploaded = sum(heard_seconds(o["text"]) for o in outputs)
    return requests(sim_url) - before, uploaded, outputs, wall


def boundary_errors(
    segments: list[dict[str, float]], truth: list[tuple[float, float]]
) -> list[float]:
    """For every sentence start and end, the distance to the nearest segment start or end."""
    starts = np.array([s["start"] for s in segments])
    ends = np.array([s["end"] for s in segments])
    errors = []
    for a, b in truth:
        errors.append(float(np.min(np.abs(starts - a))) if len(starts) else float("inf"))
        errors.append(float(np.min(np.abs(ends - b))) if len(ends) else float("inf"))
    return errors


def long_recording(path: Path, minutes: float, rng: random.Random, noise_db: float) -> float:
    """Sentences in random order with random pauses, written a sentence at a time."""
    voices = [speak(text, voice="en-us" if i % 2 else "en") for i, text in enumerate(SENTENCES)]
    noise = np.random.default_rng(rng.randrange(1 << 30))
    total = 0
    with soundfile.SoundFile(path, "w", RATE, 1, subtype="PCM_16") as out:
        while total < minutes * 60 * RATE:
            voice = rng.choice(voices)
            pause = np.zeros(round(rng.uniform(*PAUSE_RANGE_S) * RATE), dtype=np.float32)
            block = np.concatenate([voice, pause])
            out.write(block + noise.normal(0, 10 ** (noise_db / 20), len(block)))
            total += len(block)
    return total / RATE


def row(name: str, calls: int, uploaded: float, total: float, wall: float) -> str:
    return f"  {name:<20} {calls:>8} {uploaded:>12.1f} s {uploaded / total:>8.2f}x {wall:>8.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--recordings", type=int, default=6)
    parser.add_argument("--sentences", type=int, default=10, help="sentences per recording")
    parser.add_argument("--minutes", type=float, default=60.0, help="the long recording")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument(
        "--noise-db", type=float, default=-50.0, help="room noise under everything (dBFS RMS)"
    )
    args = parser.parse_args()
    sigterm_as_interrupt()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp, Services(Path(tmp)) as services:
        work = Path(tmp)
        archive = work / "calls"
        archive.mkdir()
        truths: dict[str, list[tuple[float, float]]] = {}
        total_s = 0.0
        for n in range(args.recordings):
            sentences = rng.sample(SENTENCES, k=min(args.sentences, len(SENTENCES)))
            pauses = [rng.uniform(*PAUSE_RANGE_S) for _ in sentences]
            made = conversation(sentences, pauses, noise_db=args.noise_db, seed=args.seed + n)
            made.write(archive / f"call{n:02d}.wav", subtype="PCM_16")
            truths[f"call{n:02d}.wav"] = made.truth
            total_s += made.seconds
        speech_s = sum(b - a for t in truths.values() for a, b in t)
        sim = services.simulator()
        print(
            f"archive: {args.recordings} recordings, {sum(map(len, truths.values()))} sentences "
            f"(espeak-ng), {total_s:.1f} s in all, {speech_s:.1f} s of speech, pauses "
            f"{PAUSE_RANGE_S[0]}-{PAUSE_RANGE_S[1]} s, noise {args.noise_db:g} dBFS"
        )
        print(f"  {'':<20} {'requests':>8} {'uploaded':>14} {'vs total':>9} {'wall':>10}")
        runs = {}
        for name, flags in (
            ("plain", ()),
            ("--compact-silence", ("--compact-silence",)),
            ("--segments", ("--segments",)),
            ("both", ("--segments", "--compact-silence")),
        ):
            calls, uploaded, outputs, wall = batch(
                sim.url, archive, work / f"data-{len(runs)}", *flags, workdir=work
            )
            runs[name] = outputs
            print(row(name, calls, uploaded, total_s, wall))
        errors: list[float] = []
        found = 0
        for output in runs["--segments"]:
            found += len(output["segments"])
            errors += boundary_errors(output["segments"], truths[output["input"]])
        print(
            f"segment boundaries vs the sentence timeline: {found} segments for "
            f"{sum(map(len, truths.values()))} sentences; |error| median "
            f"{statistics.median(errors):.3f} s, p90 {np.percentile(errors, 90):.3f} s, "
            f"max {max(errors):.3f} s (target: median < 0.3 s)"
        )

        long_dir = work / "long"
        long_dir.mkdir()
        seconds = long_recording(long_dir / "talk.wav", args.minutes, rng, args.noise_db)
        print(f"{seconds / 60:.1f}-minute recording ({seconds:.0f} s, pauses 0.5-4 s):")
        print(f"  {'':<20} {'requests':>8} {'uploaded':>14} {'vs total':>9} {'wall':>10}")
        for name, flags in (("plain", ()), ("--segments", ("--segments",))):
            calls, uploaded, _, wall = batch(
                sim.url, long_dir, work / f"long-{name.strip('-')}", *flags, workdir=work
            )
            print(row(name, calls, uploaded, seconds, wall))


if __name__ == "__main__":
    main()
