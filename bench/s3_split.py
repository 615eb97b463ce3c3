"""Splitting a long recording stored in S3: ranged reads vs downloading it whole.

    python bench/s3_split.py [--minutes 60]

Writes an N-minute 16 kHz mono WAV (tones and pauses), uploads it to a SeaweedFS S3 server
(its own process, on loopback), then splits it side by side, each method in a fresh
process, with the chunk files written back to the bucket as a worker does:

- ``ranged``: mimoq's path, ``split_wav`` reading the object through obstore's buffered
  ranged reader (``mimoq.core.remote.open_object``);
- ``whole``: the object downloaded into memory (``obstore.get().bytes()``), then split.

The S3 traffic goes through a counting loopback relay: "read" is every byte S3 sent the
splitting process (responses, headers included), as a multiple of the file's size.
Memory is the split's peak RSS above the RSS before it (peak reset through
``/proc/self/clear_refs``; obstore's Rust buffers included) and the tracemalloc peak
(Python and numpy allocations only).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

from _s3 import start_s3
from _support import MIB, run_child, sigterm_as_interrupt
from split_memory import write_recording

from mimoq.core.audio import WavFormat

METHODS = ("whole", "ranged")
KEY = "archive/long.wav"


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> int:
    """Reset this process's peak RSS (Linux: clear_refs 5) and return the current RSS:
    ``ru_maxrss`` never goes down, so imports would hide a split smaller than them."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS")


def peak_rss() -> int:
    return _status_kib("VmHWM")


def child(method: str, url: str) -> dict[str, Any]:
    import io

    import obstore

    from mimoq.core.objstore import ObjectStorage
    from mimoq.core.remote import open_object
    from mimoq.core.splitting.split_limits import max_chunk_bytes
    from mimoq.core.splitting.wavsplit import split_wav

    storage = ObjectStorage(url)
    prefix = f"chunks/{method}-{uuid.uuid4().hex[:8]}"

    def open_chunk(index: int) -> Any:
        return storage.open_atomic(f"{prefix}/{index:03d}.wav")

    def run() -> int:
        if method == "whole":
            data = bytes(obstore.get(storage.store, storage.path(KEY)).bytes())
            return len(split_wav(io.BytesIO(data), open_chunk, max_bytes=limit))
        with open_object(storage.url(KEY), storage, "file") as f:
            return len(split_wav(f, open_chunk, max_bytes=limit))

    limit = max_chunk_bytes("audio/wav")
    gc.collect()
    before = reset_peak_rss()
    started = time.perf_counter()
    chunks = run()
    elapsed = time.perf_counter() - started
    rss = peak_rss() - before
    tracemalloc.start()
    run()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"time_s": elapsed, "rss_delta": rss, "traced_peak": peak, "chunks": chunks}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.url)))
        return 0

    sigterm_as_interrupt()
    from mimoq.core.objstore import ObjectStorage
    from tests.support.tcp_proxy import FreezingProxy

    s3 = start_s3()
    results: dict[str, dict[str, Any]] = {}
    try:
        for name, value in s3.env().items():
            os.environ[name] = value
        url = "s3://bench/split"
        with tempfile.TemporaryDirectory(prefix="mimoq-bench-") as tmp:
            path = Path(tmp) / "long.wav"
            write_recording(path, WavFormat(16_000, 1, 16), args.minutes)
            size = path.stat().st_size
            with open(path, "rb") as f:
                ObjectStorage(url).put_file(KEY, f)
        host, port = s3.endpoint.removeprefix("http://").split(":")
        for method in METHODS:
            with FreezingProxy(host, int(port), freeze_after=1 << 62) as relay:
                argv = [sys.executable, __file__, "--child", method, "--url", url]
                report = run_child(argv, timeout_s=900, env={"AWS_ENDPOINT": relay.url})
                report["read"] = relay.received
            results[method] = report
    finally:
        s3.stop()

    print(
        f"recording: {args.minutes:g} min of 16 kHz mono WAV = {size / MIB:.1f} MiB (F) in S3; "
        "chunks written back to the bucket; each method in a fresh process, run twice "
        "(untraced, then traced)"
    )
    print(f"{'method':<8}{'time s':>8}{'chunks':>8}{'peak RSS delta':>22}{'tracemalloc':>22}"
          f"{'read from S3 (2 runs)':>26}")  # fmt: skip
    for method, r in results.items():
        rss = f"{r['rss_delta'] / MIB:8.2f} MiB {r['rss_delta'] / size:5.3f}xF"
        traced = f"{r['traced_peak'] / MIB:8.2f} MiB {r['traced_peak'] / size:5.3f}xF"
        read = f"{r['read'] / MIB:8.1f} MiB {r['read'] / 2 / size:5.3f}xF/run"
        print(f"{method:<8}{r['time_s']:>8.2f}{r['chunks']:>8}{rss:>22}{traced:>22}{read:>26}")
    whole, ranged = results["whole"], results["ranged"]
    print(
        f"whole / ranged: peak RSS delta {whole['rss_delta'] / max(ranged['rss_delta'], 1):.1f}x, "
        f"time {whole['time_s'] / ranged['time_s']:.2f}x; same chunks: "
        f"{'yes' if whole['chunks'] == ranged['chunks'] else 'NO'}"
    )
    return 0 if whole["chunks"] == ranged["chunks"] else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: every process this bench started is stopped", file=sys.stderr)
        sys.exit(130)
