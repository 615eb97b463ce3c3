"""Peak memory and time of splitting long WAV recordings: streamed splitter vs reading whole.

Run: python bench/split_memory.py [--minutes 10 60]

For each length, writes a 16 kHz mono and a 44.1 kHz stereo WAV (tones with pauses) to a
temporary folder, then measures side by side, in one process:
- naive: read the whole file, cut it into fixed-size pieces (what splitting without
  streaming costs at the least);
- mimoq: ``split_wav`` (streamed, quiet-point cuts, down-mix/resample when it shrinks).
Peak memory is traced allocations (tracemalloc, which numpy reports to) above the baseline.
Prints one line per case and the ratios between lengths: a flat splitter stays near 1.0.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mimoq.core.audio import WavFormat, wav_header
from mimoq.core.splitting.split_limits import max_chunk_bytes
from mimoq.core.splitting.wavsplit import split_wav


def write_recording(path: Path, fmt: WavFormat, minutes: float) -> None:
    """Tones and pauses, written a minute at a time (the bench itself stays small)."""
    frames = int(minutes * 60 * fmt.sample_rate)
    with open(path, "wb") as f:
        f.write(wav_header(fmt, frames * fmt.block_align))
        t = np.arange(60 * fmt.sample_rate) / fmt.sample_rate
        minute = (0.25 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
        minute[(t % 7) > 6.5] = 0  # a half-second pause every 7 s
        block = np.repeat(minute[:, None], fmt.channels, axis=1).tobytes()
        for start in range(0, frames, 60 * fmt.sample_rate):
            n = min(60 * fmt.sample_rate, frames - start)
            f.write(block[: n * fmt.block_align])


def sink_dir(root: Path) -> Callable[[int], contextlib.AbstractContextManager[BinaryIO]]:
    @contextlib.contextmanager
    def open_chunk(index: int) -> Iterator[BinaryIO]:
        with open(root / f"{index:04d}.wav", "wb") as f:
            yield f

    return open_chunk


def naive(path: Path, out: Path) -> int:
    data = path.read_bytes()
    size = max_chunk_bytes("audio/wav")
    for i, start in enumerate(range(44, len(data), size)):
        (out / f"n{i:04d}.wav").write_bytes(data[start : start + size])
    return len(range(44, len(data), size))


def streamed(path: Path, out: Path) -> int:
    with open(path, "rb") as f:
        return len(split_wav(f, sink_dir(out), max_bytes=max_chunk_bytes("audio/wav")))


def measure(fn: Callable[[Path, Path], int], path: Path, out: Path) -> tuple[float, float, int]:
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    chunks = fn(path, out)
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    for leftover in out.iterdir():
        leftover.unlink()
    return peak / 2**20, elapsed, chunks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0, 60.0])
    args = parser.parse_args()
    formats = [WavFormat(16_000, 1, 16), WavFormat(44_100, 2, 16)]
    peaks: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        out = root / "out"
        out.mkdir()
        for minutes in args.minutes:
            for fmt in formats:
                path = root / "rec.wav"
                write_recording(path, fmt, minutes)
                size = os.path.getsize(path) / 2**20
                label = f"{fmt.sample_rate // 1000}k{'mono' if fmt.channels == 1 else 'stereo'}"
                for name, fn in (("naive", naive), ("mimoq", streamed)):
                    peak, seconds, chunks = measure(fn, path, out)
                    peaks.setdefault((label, name), []).append(peak)
                    print(
                        f"{minutes:5.0f} min {label:11s} {size:8.1f} MiB  {name:6s} "
                        f"peak {peak:8.1f} MiB  {seconds:6.2f} s  {chunks:3d} chunks"
                    )
                path.unlink()
    print("peak memory, longest / shortest recording (1.0 = flat):")
    for (label, name), values in peaks.items():
        print(f"  {label:11s} {name:6s} x{values[-1] / values[0]:.2f}")


if __name__ == "__main__":
    main()
