"""The HTTP front door's cost: added latency of POST /v1/audio/speech over a direct Redis
enqueue + wait, and the server's peak memory while a large transcription is uploaded.

    python bench/http_frontdoor.py [--requests 200] [--upload-mb 200]

One private redis-server, the simulator at zero upstream latency, one `mimoq worker` and one
`mimoq serve`, each its own process on loopback. Latency phase: ``--requests`` speech jobs,
one at a time, alternating between

- ``direct``: ``Producer.enqueue`` + ``Producer.wait`` from this process, then the WAV read
  from the data directory (what a Python producer on the Redis does to get the audio);
- ``http``: ``POST /v1/audio/speech`` with httpx (keep-alive), the whole WAV read back.

so both see the same worker, queue and moment. Prints p50/p99 of each, the added latency
(http − direct) at p50/p99, and the ratio. Memory phase: the worker is stopped (so nothing
transcribes a 200 MB file on a shared host), then a ``--upload-mb`` WAV is streamed to
``POST /v1/audio/transcriptions`` with ``Prefer: respond-async`` from a generator (never
whole in this process either). The server's RSS is read from /proc: idle (after warm-up
requests) and its high-water mark (VmHWM) after the upload.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from _support import Service, Services, free_port, sigterm_as_interrupt
from arq.connections import ArqRedis

from mimoq.core.settings import Settings
from mimoq.producer.client import Producer

TOKEN = "bench-token-0123456789abcdef"
TEXT = "Hello from the front door bench."
MIB = 1 << 20


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


Stack = tuple[Service, Service, Service, dict[str, str]]


def start_stack(services: Services, workdir: Path) -> Stack:
    redis = services.redis()
    sim = services.simulator()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MIMO", "REDIS_URL"))},
        "REDIS_URL": redis.url,
        "MIMO_API_KEY": "sk-bench-0123456789",
        "MIMO_BASE_URL": sim.url + "/v1",
        "MIMOQ_DATA_DIR": str(workdir / "data"),
        "MIMOQ_LIMITS_ENABLED": "false",
        "MIMOQ_POLL_DELAY_S": "0.01",
        "MIMOQ_API_TOKENS": f"bench:{TOKEN}",
        "MIMOQ_LOG_LEVEL": "WARNING",
    }
    worker = services._spawn(
        "worker", [sys.executable, "-m", "mimoq.cli", "worker", "--metrics-port", "0"], "", env
    )
    port = free_port()
    serve = services._http(
        "serve",
        [sys.executable, "-m", "mimoq.cli", "serve", "--port", str(port)],
        port,
        "/healthz",
        env,
    )
    return redis, worker, serve, env


async def latency(args: argparse.Namespace, redis_url: str, serve: Service, data_dir: Path) -> None:
    settings = Settings(redis_url=redis_url, storage={"data_dir": data_dir})
    arq = ArqRedis.from_url(redis_url)
    producer = Producer(arq, settings)
    body = {"model": "tts-1", "voice": "Mia", "input": TEXT}
    times: dict[str, list[float]] = {"direct": [], "http": []}
    async with httpx.AsyncClient(
        base_url=serve.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120
    ) as http:
        for i in range(args.requests + 10):  # the first 10 of each warm up, not counted
            started = time.perf_counter()
            job = await producer.enqueue({"kind": "speech", "input": TEXT, "voice": "Mia"})
            result = await producer.wait(job.job_id, timeout_s=120)
            assert result.output is not None
            audio = await asyncio.to_thread(Path(result.output.path).read_bytes)
            direct = time.perf_counter() - started
            started = time.perf_counter()
            answer = await http.post("/v1/audio/speech", json=body)
            over_http = time.perf_counter() - started
            assert answer.status_code == 200 and answer.content[:4] == audio[:4] == b"RIFF"
            if i >= 10:
                times["direct"].append(direct)
                times["http"].append(over_http)
    await arq.aclose()
    print(f"latency, {args.requests} sequential speech jobs each way, zero upstream latency:")
    print(f"  {'':8} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name, values in times.items():
        print(
            f"  {name:8} {_pct(values, 0.5) * 1000:8.1f} {_pct(values, 0.99) * 1000:8.1f} "
            f"{statistics.mean(values) * 1000:8.1f}"
        )
    for q, label in ((0.5, "p50"), (0.99, "p99")):
        d, h = _pct(times["direct"], q), _pct(times["http"], q)
        print(f"  added by HTTP at {label}: {(h - d) * 1000:+.1f} ms (http/direct = {h / d:.2f}x)")


def wav_stream(total: int) -> Iterator[bytes]:
    """A multipart body carrying a ``total``-byte 16 kHz mono WAV, generated as it is sent."""
    data_bytes = total - 44
    yield (
        b'--BENCH\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
        b'--BENCH\r\nContent-Disposition: form-data; name="file"; filename="long.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\n"
    )
    yield (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )
    block = bytes(range(256)) * 256  # 64 KiB of samples
    sent = 0
    while sent < data_bytes:
        n = min(len(block), data_bytes - sent)
        yield block[:n]
        sent += n
    yield b"\r\n--BENCH--\r\n"


def upload_memory(args: argparse.Namespace, serve: Service) -> None:
    pid = serve.process.pid
    idle = _status_kib(pid, "VmRSS")
    total = args.upload_mb * MIB
    started = time.perf_counter()
    with httpx.Client(base_url=serve.url, timeout=600) as http:
        answer = http.post(
            "/v1/audio/transcriptions",
            content=wav_stream(total),
            headers={
                "Authorization": f"Bearer {TOKEN}",
                "Content-Type": "multipart/form-data; boundary=BENCH",
                "Prefer": "respond-async",
            },
        )
    took = time.perf_counter() - started
    assert answer.status_code == 202, answer.text
    peak = _status_kib(pid, "VmHWM")
    over = (peak - idle) / 1024
    print(f"upload of a {args.upload_mb} MiB WAV to POST /v1/audio/transcriptions:")
    print(f"  server RSS idle {idle / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB")
    print(
        f"  peak over idle {over:.1f} MiB = {over / args.upload_mb * 100:.2f} % of the upload "
        f"({args.upload_mb / took:.0f} MiB/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--upload-mb", type=int, default=200)
    args = parser.parse_args()
    sigterm_as_interrupt()
    with (
        tempfile.TemporaryDirectory(prefix="mimoq-bench-http-") as tmp,
        Services(Path(tmp)) as services,
    ):
        redis, worker, serve, env = start_stack(services, Path(tmp))
        asyncio.run(latency(args, redis.url, serve, Path(env["MIMOQ_DATA_DIR"])))
        worker.stop()
        upload_memory(args, serve)


if __name__ == "__main__":
    main()
