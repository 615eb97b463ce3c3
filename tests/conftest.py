"""Shared fixtures: a private redis-server per test session, and clean clients per test.

Tests never use the machine's Redis on 6379: each session starts its own server on a free
port (binding to port 0 first; ``redis-server --port 0`` would mean "no TCP listener").
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis as sync_redis
from arq.connections import ArqRedis


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RedisServer:
    port: int
    dir: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

    def start_again(self) -> None:
        """Restart on the same port and directory (AOF on, so data survives)."""
        self.process = _spawn(self.port, self.dir)


def _spawn(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    assert binary is not None
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(workdir),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = sync_redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:  # readiness: poll for PING, the server's own signal that it is up
        try:
            if client.ping():
                break
        except sync_redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.02)
    client.close()
    return proc


def start_redis_server() -> RedisServer:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    workdir = Path(tempfile.mkdtemp(prefix="mimoq-redis-"))
    port = free_port()
    return RedisServer(port=port, dir=workdir, process=_spawn(port, workdir))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis_server()
    yield server
    server.process.terminate()
    server.process.wait(timeout=10)
    shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[ArqRedis]:
    """An arq client on a flushed private Redis."""
    client = ArqRedis.from_url(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()
