"""The HTTP front door as users run it: `mimoq serve` and `mimoq worker` as real processes,
on a private redis-server, with the simulator standing in for MiMo."""

from __future__ import annotations

import io
import math
import struct
import subprocess
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis as sync_redis

from mimoq.sim.sim_config import SimConfig
from mimoq.sim.sim_server import RunningSim, start_in_thread
from tests.conftest import RedisServer, free_port
from tests.support.cli import clean_env, mimoq_args
from tests.support.polling import wait_until

API_KEY = "sk-http-secret-key-0123456789"
ALICE = "tok-alice-0123456789abcdef"
BOB = "tok-bob-0123456789abcdef0000"
UNNAMED = "tok-unnamed-0123456789abcdef"
TOKENS = f"alice:{ALICE}, bob:{BOB} {UNNAMED}"


@dataclass
class Stack:
    """A running front door and worker; ``url`` is the server's root."""

    url: str
    port: int
    data_dir: Path
    redis_url: str
    sim: RunningSim
    env: dict[str, str]

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def redis(self) -> sync_redis.Redis:
        return sync_redis.Redis.from_url(self.redis_url)


def stack_env(
    redis_server: RedisServer, sim: RunningSim, data_dir: Path, **extra: str
) -> dict[str, str]:
    values = dict(
        REDIS_URL=redis_server.url,
        MIMO_API_KEY=API_KEY,
        MIMO_BASE_URL=sim.url,
        MIMOQ_DATA_DIR=str(data_dir),
        MIMOQ_POLL_DELAY_S="0.01",
        MIMOQ_LIMITS_ENABLED="false",
        MIMOQ_BACKOFF_BASE_S="0.01",
        MIMOQ_BACKOFF_MAX_S="0.05",
        MIMOQ_MAX_TRIES="3",
        MIMOQ_CALLBACK_ALLOW_NETWORKS="127.0.0.0/8",
        MIMOQ_CALLBACK_SCHEDULE_S="0,0.05",
        MIMOQ_HEARTBEAT_INTERVAL_S="0.5",
        MIMOQ_API_TOKENS=TOKENS,
        MIMOQ_HTTP_UPLOAD_SWEEP_S="0.2",
    )
    return clean_env(**{**values, **extra})


def start_server(env: dict[str, str], cwd: Path, port: int, *args: str) -> subprocess.Popen[bytes]:
    """`mimoq serve` on ``port``, once it answers /healthz; its stderr goes to cwd/serve.log."""
    log = cwd / "serve.log"
    with log.open("ab") as err:
        proc = subprocess.Popen(
            mimoq_args("serve", "--port", str(port), *args), env=env, cwd=cwd,
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"mimoq serve exited: {log.read_text()}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(up, what="mimoq serve to answer /healthz")
    return proc


def start_worker(env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    """A worker process; its log is ``cwd/worker.log`` (a 502's "see its logs" is there)."""
    with (cwd / "worker.log").open("ab") as log:
        return subprocess.Popen(
            mimoq_args("worker", "--metrics-port", "0"), env=env, cwd=cwd,
            stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSim]:
    with start_in_thread(SimConfig(api_key=API_KEY)) as running:
        yield running


@pytest.fixture(scope="module")
def stack(
    redis_server: RedisServer, sim: RunningSim, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """One server and one worker for a whole test module (starting them takes seconds)."""
    sync_redis.Redis.from_url(redis_server.url).flushall()
    root = tmp_path_factory.mktemp("http")
    data_dir = root / "data"
    env = stack_env(redis_server, sim, data_dir)
    port = free_port()
    worker = start_worker(env, root)
    server = start_server(env, root, port)
    try:
        yield Stack(f"http://127.0.0.1:{port}", port, data_dir, redis_server.url, sim, env)
    finally:
        stop(server)
        stop(worker)


HttpAs = Callable[[str], httpx.Client]


@pytest.fixture
def http_as(stack: Stack) -> Iterator[HttpAs]:
    """Plain HTTP clients of the front door, one per bearer token asked for; closed after."""
    made: list[httpx.Client] = []

    def make(token: str) -> httpx.Client:
        made.append(
            httpx.Client(
                base_url=stack.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
            )
        )
        return made[-1]

    yield make
    for client in made:
        client.close()


def wav_bytes(seconds: float = 1.0, rate: int = 16_000) -> bytes:
    """A real 16-bit mono WAV file with a tone, as a recorder would write it."""
    frames = int(seconds * rate)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(
            b"".join(
                struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
                for i in range(frames)
            )
        )
    return buf.getvalue()
