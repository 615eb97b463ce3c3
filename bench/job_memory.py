"""Peak memory of one whole speech job carrying N MB of audio: mimoq end to end vs the naive path.

    python bench/job_memory.py [--mb 50]

The simulator runs in its own process, answering every TTS request with N MiB of audio.
Each method runs in a fresh subprocess (so one's high-water mark cannot hide the other's):

- ``mimoq``: the embedded default (fakeredis + in-process worker), ``Producer.enqueue`` ->
  worker -> ``MimoClient`` stream-decoding -> WAV file -> result record; measured from just
  before the enqueue until the result record is read back.
- ``naive``: httpx POST of the same request body, ``response.json()``, ``base64.b64decode``,
  write the file.
- ``s3``: ``mimoq`` with ``MIMOQ_STORAGE_URL`` on a SeaweedFS S3 server (its own process):
  the audio streams into a multipart upload instead of a local file.

Both first run a small warm-up job (imports, connections, one-off allocations), then the
measured job twice: untraced for the time and the ``ru_maxrss`` delta, then under
tracemalloc for its peak. The parent checks both files hold the same audio samples.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import hashlib
import json
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from _s3 import start_s3
from _support import (
    MIB,
    Services,
    maxrss_bytes,
    rss_ratio,
    run_child,
    sigterm_as_interrupt,
)

from mimoq.core.audio import MAX_WAV_HEADER_BYTES, parse_wav_header
from mimoq.core.dialect import auth_headers, speech_body
from mimoq.core.jobs import JobResult, SpeechJob

METHODS = ("naive", "mimoq", "s3")
#: The s3 method's own job time and maxrss at its end: its run also downloads the output
#: for the audio check, which is not part of the job.
JOB_TIMES: list[float] = []
JOB_MAXRSS: list[int] = []
#: The simulator answers requests whose body contains this with a small answer instead.
WARMUP_MARK = "bench warm-up"
WARMUP_AUDIO_BYTES = 64 * 1024
TEXT = "The measured answer carries the whole benchmark's audio."
CHILD_TIMEOUT_S = 300.0
RESULT_POLL_S = 0.005  # tight, so polling granularity does not blur the job's time


def audio_digest(path: Path) -> tuple[int, str]:
    """(sample bytes, sha256 of the samples) of a WAV file, read in 1 MiB blocks."""
    with path.open("rb") as f:
        parsed = parse_wav_header(f.read(MAX_WAV_HEADER_BYTES))
        if parsed is None:
            raise RuntimeError(f"{path} has no complete WAV header")
        _, offset, declared = parsed
        f.seek(offset)
        digest, size = hashlib.sha256(), 0
        while block := f.read(min(MIB, declared - size) if declared is not None else MIB):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


async def measure(
    run: Callable[[str], Awaitable[Path]], *, warmup: Callable[[], Awaitable[Path]]
) -> dict[str, Any]:
    """Warm up, then run the measured job untraced (time, maxrss) and traced (peak)."""
    (await warmup()).unlink()
    gc.collect()
    rss_before = maxrss_bytes()
    started = time.perf_counter()
    out = await run("measured")
    elapsed = JOB_TIMES.pop() if JOB_TIMES else time.perf_counter() - started
    rss_delta = (JOB_MAXRSS.pop() if JOB_MAXRSS else maxrss_bytes()) - rss_before
    samples, sha = audio_digest(out)

    gc.collect()
    tracemalloc.start()
    traced_out = await run("traced")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    if traced_out.stat().st_size != out.stat().st_size:
        raise RuntimeError(
            f"the traced run wrote {traced_out.stat().st_size} bytes, "
            f"the untraced one {out.stat().st_size}"
        )
    for path in (out, traced_out):
        path.unlink()
    return {
        "time_s": elapsed,
        "rss_delta": rss_delta,
        "traced_peak": peak,
        "samples": samples,
        "sha256": sha,
    }


# --- the naive path -----------------------------------------------------------------------


async def naive_child(sim_url: str, out_dir: Path) -> dict[str, Any]:
    """What a first client would write: POST, ``response.json()``, ``b64decode``, write."""
    import httpx

    url = sim_url + "/v1/chat/completions"
    headers = auth_headers(None)

    async def speak(name: str, text: str) -> Path:
        body = speech_body(SpeechJob(input=text)).head  # the request mimoq would send
        async with httpx.AsyncClient(timeout=120.0) as client:
            response = await client.post(url, content=body, headers=headers)
            response.raise_for_status()
            data = response.json()
        audio = base64.b64decode(data["choices"][0]["message"]["audio"]["data"])
        out = out_dir / f"{name}.wav"
        out.write_bytes(audio)
        return out

    return await measure(
        lambda name: speak(name, TEXT), warmup=lambda: speak("warmup", f"{WARMUP_MARK}: hello")
    )


# --- mimoq, end to end --------------------------------------------------------------------


async def mimoq_child(sim_url: str, out_dir: Path) -> dict[str, Any]:
    """The embedded default: enqueue, the in-process worker streams the answer to a file."""
    from mimoq.cli.producer_session import open_session
    from mimoq.core.logs import configure
    from mimoq.core.settings import Settings

    configure(level="WARNING")  # no per-job log lines in the measurement
    settings = Settings(
        mimo={"base_url": sim_url + "/v1"},
        redis_url=None,  # the embedded default, whatever REDIS_URL says
        storage={"data_dir": out_dir},
        limiter={"enabled": False},
        worker={"poll_delay_s": 0.01},  # an idle worker picks the job up at once
    )
    async with open_session(settings) as session:
        producer = session.producer

        async def speak(job_id: str, text: str) -> Path:
            await producer.enqueue({"kind": "speech", "id": job_id, "input": text})
            deadline = time.monotonic() + CHILD_TIMEOUT_S
            result: JobResult | None = None
            while result is None:  # poll the result record, the job's real completion signal
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no result for {job_id}")
                await asyncio.sleep(RESULT_POLL_S)
                result = await producer.result(job_id)
            if result.status != "succeeded" or result.output is None:
                raise RuntimeError(f"job {job_id} failed: {result.error}")
            return Path(result.output.path)

        return await measure(
            lambda name: speak(name, TEXT), warmup=lambda: speak("warmup", f"{WARMUP_MARK}: hi")
        )


async def s3_child(sim_url: str, out_dir: Path) -> dict[str, Any]:
    """The same job with ``MIMOQ_STORAGE_URL=s3://…`` (SeaweedFS in its own process): the
    audio is decoded straight into a multipart upload. Its time ends at the result record;
    the download that follows (for the audio check) is not counted."""
    import os

    from mimoq.cli.producer_session import open_session
    from mimoq.core.fetching import download_output
    from mimoq.core.logs import configure
    from mimoq.core.settings import Settings

    configure(level="WARNING")
    settings = Settings(
        mimo={"base_url": sim_url + "/v1"},
        redis_url=None,
        storage={"data_dir": out_dir / "data", "url": os.environ["BENCH_S3_URL"]},
        limiter={"enabled": False},
        worker={"poll_delay_s": 0.01},
    )
    async with open_session(settings) as session:
        producer = session.producer

        async def speak(job_id: str, text: str) -> Path:
            started = time.perf_counter()
            await producer.enqueue({"kind": "speech", "id": job_id, "input": text})
            deadline = time.monotonic() + CHILD_TIMEOUT_S
            result: JobResult | None = None
            while result is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no result for {job_id}")
                await asyncio.sleep(RESULT_POLL_S)
                result = await producer.result(job_id)
            if result.status != "succeeded" or result.output is None:
                raise RuntimeError(f"job {job_id} failed: {result.error}")
            if job_id == "measured":
                JOB_TIMES.append(time.perf_counter() - started)
                JOB_MAXRSS.append(maxrss_bytes())
            out = out_dir / f"{job_id}.wav"
            if job_id != "traced":  # the traced run only needs its size (its peak is read after)
                assert result.output.url is not None
                await asyncio.to_thread(download_output, result.output.url, out, None)
            else:
                with out.open("wb") as f:
                    f.truncate(result.output.bytes)
            return out

        return await measure(
            lambda name: speak(name, TEXT), warmup=lambda: speak("warmup", f"{WARMUP_MARK}: hi")
        )


CHILDREN: dict[str, Callable[[str, Path], Coroutine[Any, Any, dict[str, Any]]]] = {
    "naive": naive_child,
    "mimoq": mimoq_child,
    "s3": s3_child,
}


# --- the parent ---------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--mb", type=float, default=50.0, help="MiB of audio in the answer")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--sim", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(CHILDREN[args.child](args.sim, args.out))))
        return 0

    sigterm_as_interrupt()
    audio = int(args.mb * MIB) // 2 * 2  # whole 16-bit samples, as the simulator sends
    warmup = {"kind": "audio_bytes", "audio_bytes": WARMUP_AUDIO_BYTES, "match": WARMUP_MARK}
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="mimoq-bench-") as tmp, Services(Path(tmp)) as svc:
        sim = svc.simulator("--audio-bytes", str(audio), "--faults", json.dumps([warmup]))
        s3 = start_s3()
        try:
            for method in METHODS:
                out = Path(tmp) / method
                out.mkdir()
                argv = [sys.executable, __file__, "--child", method, "--sim", sim.url]
                env = {**s3.env(), "BENCH_S3_URL": "s3://bench/job-memory"}
                results[method] = run_child(
                    [*argv, "--out", str(out)], timeout_s=CHILD_TIMEOUT_S, env=env
                )
        finally:
            s3.stop()

    print(
        f"audio A = {audio / MIB:.1f} MiB per answer (a {audio * 4 / 3 / MIB:.1f} MiB base64 "
        "body), simulator in its own process, each method in a fresh one"
    )
    print(f"{'method':<8}{'time s':>8}{'tracemalloc peak':>24}{'maxrss delta':>24}")
    for method, r in results.items():
        traced = f"{r['traced_peak'] / MIB:8.2f} MiB {r['traced_peak'] / audio:6.3f}xA"
        rss = f"{r['rss_delta'] / MIB:8.2f} MiB {r['rss_delta'] / audio:6.3f}xA"
        print(f"{method:<8}{r['time_s']:>8.3f}{traced:>24}{rss:>24}")
    naive_r, mimoq_r, s3_r = results["naive"], results["mimoq"], results["s3"]
    print(
        f"s3 / local (mimoq): time {s3_r['time_s'] / mimoq_r['time_s']:.2f}x, "
        f"maxrss delta {rss_ratio(s3_r['rss_delta'], mimoq_r['rss_delta'])} "
        "(tracemalloc does not see obstore's Rust-side part buffers: maxrss does)"
    )
    peaks = naive_r["traced_peak"] / max(mimoq_r["traced_peak"], 1)
    print(
        f"naive / mimoq: tracemalloc peak {peaks:.0f}x, "
        f"maxrss delta {rss_ratio(naive_r['rss_delta'], mimoq_r['rss_delta'])}, "
        f"time {naive_r['time_s'] / mimoq_r['time_s']:.2f}x"
    )
    same = naive_r["samples"] == mimoq_r["samples"] == s3_r["samples"] == audio
    same = same and naive_r["sha256"] == mimoq_r["sha256"] == s3_r["sha256"]
    print(
        f"same audio samples in both files ({naive_r['samples']} / {mimoq_r['samples']} bytes, "
        f"sha256 {'equal' if naive_r['sha256'] == mimoq_r['sha256'] else 'DIFFERENT'}): "
        f"{'yes' if same else 'NO'}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: every process this bench started is stopped", file=sys.stderr)
        sys.exit(130)
