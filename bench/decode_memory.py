"""Peak memory and time of decoding a MiMo TTS answer: naive json+base64 vs the streamed path.

    python bench/decode_memory.py [--mb 50] [--escape-slashes]

Each method runs in a fresh subprocess (so one's high-water mark cannot hide the other's):
first untraced, for the time and the ru_maxrss delta, then again under tracemalloc for its
peak. Both read the same lazily generated body in 64 KiB chunks, as ``aiter_bytes`` would
hand it over, and write the audio to a temporary file; the parent checks both files match.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mimoq.core.audio import MIMO_PCM, AudioSink, wav_header
from mimoq.core.b64stream import AudioDataExtractor

MIB = 1 << 20
CHUNK = 64 * 1024  # what httpx's aiter_bytes typically hands over
BLOCK = 48 * 1024  # audio bytes per base64 block: 3-aligned, encodes to exactly 64 KiB
METHODS = ("naive", "streamed")

PREFIX = (
    b'{"id":"chatcmpl-bench","object":"chat.completion","created":0,"model":"mimo-v2.5-tts",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"","audio":'
    b'{"id":"audio-bench","data":"'
)
SUFFIX = (
    b'","expires_at":null,"transcript":null}},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":12,"completion_tokens":0,"total_tokens":12}}'
)


def body_chunks(blocks: int, escape_slashes: bool) -> Iterator[bytes]:
    """The response body, lazily, in 64 KiB chunks cut anywhere (not on base64 groups).

    The audio is a WAV whose samples repeat one random 48 KiB block, so the generator holds
    two encoded blocks and a carry, whatever the size.
    """
    rng = random.Random(42)
    samples = rng.randbytes(BLOCK)
    header = wav_header(MIMO_PCM, blocks * BLOCK - 44)
    first = base64.b64encode(header + samples[: BLOCK - len(header)])
    rest = base64.b64encode(samples)
    if escape_slashes:  # what PHP-style JSON encoders send
        first, rest = first.replace(b"/", b"\\/"), rest.replace(b"/", b"\\/")

    def pieces() -> Iterator[bytes]:
        yield PREFIX
        yield first
        for _ in range(blocks - 1):
            yield rest
        yield SUFFIX

    carry = b""
    for piece in pieces():
        carry += piece
        while len(carry) >= CHUNK:
            yield carry[:CHUNK]
            carry = carry[CHUNK:]
    if carry:
        yield carry


def naive(chunks: Iterator[bytes], out: Path) -> None:
    """What ``response.json()`` then ``base64.b64decode`` does."""
    body = b"".join(chunks)
    data = json.loads(body)
    audio = base64.b64decode(data["choices"][0]["message"]["audio"]["data"])
    out.write_bytes(audio)


def streamed(chunks: Iterator[bytes], out: Path) -> None:
    """The worker's path: extractor -> AudioSink -> file, one chunk at a time."""
    with out.open("wb") as f:
        sink = AudioSink(f, source="wav", output="wav")
        extractor = AudioDataExtractor(sink.write)
        for chunk in chunks:
            extractor.feed(chunk)
        extractor.finish()
        sink.finish()


RUNNERS: dict[str, Callable[[Iterator[bytes], Path], None]] = {
    "naive": naive,
    "streamed": streamed,
}


def maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def child(method: str, blocks: int, escape_slashes: bool) -> dict[str, Any]:
    """Run one method twice in this (fresh) process and report its numbers."""
    run = RUNNERS[method]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.wav"
        chunks = body_chunks(blocks, escape_slashes)
        rss_before = maxrss_bytes()
        started = time.perf_counter()
        run(chunks, out)
        elapsed = time.perf_counter() - started
        rss_delta = maxrss_bytes() - rss_before
        digest = hashlib.sha256(out.read_bytes()).hexdigest()
        size = out.stat().st_size
        out.unlink()

        tracemalloc.start()
        run(body_chunks(blocks, escape_slashes), out)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return {
        "time_s": elapsed,
        "rss_delta": rss_delta,
        "traced_peak": peak,
        "sha256": digest,
        "size": size,
    }


def rss_ratio(big: int, small: int) -> str:
    # ru_maxrss moves in pages; a delta under one page is "too small to see", not zero.
    page = resource.getpagesize()
    return f">= {big / page:.0f}x (below one page)" if small < page else f"{big / small:.0f}x"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50.0, help="MiB of audio in the answer")
    parser.add_argument("--escape-slashes", action="store_true", help="send '/' as '\\/'")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    blocks = max(1, round(args.mb * MIB / BLOCK))
    if args.child:
        print(json.dumps(child(args.child, blocks, args.escape_slashes)))
        return 0

    results: dict[str, dict[str, Any]] = {}
    for method in METHODS:
        cmd = [sys.executable, __file__, "--mb", str(args.mb), "--child", method]
        if args.escape_slashes:
            cmd.append("--escape-slashes")
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ)
        results[method] = json.loads(done.stdout)

    audio = blocks * BLOCK
    body = len(PREFIX) + len(SUFFIX) + audio * 4 // 3
    print(
        f"audio A = {audio / MIB:.1f} MiB in a {body / MIB:.1f} MiB body, 64 KiB chunks"
        f"{', slashes escaped' if args.escape_slashes else ''}"
    )
    print(f"{'method':<10}{'time s':>9}{'s/100MB':>9}{'tracemalloc peak':>24}{'maxrss delta':>24}")
    for method, r in results.items():
        per_100 = r["time_s"] * 100 * MIB / audio
        traced = f"{r['traced_peak'] / MIB:8.2f} MiB {r['traced_peak'] / audio:6.3f}xA"
        rss = f"{r['rss_delta'] / MIB:8.2f} MiB {r['rss_delta'] / audio:6.3f}xA"
        print(f"{method:<10}{r['time_s']:>9.3f}{per_100:>9.3f}{traced:>24}{rss:>24}")
    naive_r, streamed_r = results["naive"], results["streamed"]
    print(
        f"naive / streamed: time {naive_r['time_s'] / streamed_r['time_s']:.1f}x, "
        f"tracemalloc peak {naive_r['traced_peak'] / max(streamed_r['traced_peak'], 1):.0f}x, "
        f"maxrss delta {rss_ratio(naive_r['rss_delta'], streamed_r['rss_delta'])}"
    )
    same = naive_r["sha256"] == streamed_r["sha256"]
    same = same and naive_r["size"] == streamed_r["size"] == audio
    print(f"outputs identical ({audio} bytes): {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
