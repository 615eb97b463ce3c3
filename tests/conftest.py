"""Shared fixtures: a scrubbed environment, a private redis-server per test session, and
clean clients per test.

Tests never use the machine's Redis on 6379: each session starts its own server on a free
port (binding to port 0 first; ``redis-server --port 0`` would mean "no TCP listener").
Nor do they see the developer's own mimoq settings: every ``MIMO*`` variable and
``REDIS_URL`` is removed before collection and again around each test, so an exported key
or ``MIMOQ_CALLBACK_ALLOW_NETWORKS`` (the README's local-development advice) changes nothing.
"""

from __future__ import annotations

import logging
import os
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
import structlog
from arq.connections import ArqRedis

#: Environment variables that configure mimoq (and MiMo keys): never inherited by a test.
SCRUBBED_PREFIXES = ("MIMO", "XIAOMI", "OTEL_")
SCRUBBED_NAMES = frozenset({"REDIS_URL"})


def _is_scrubbed(name: str) -> bool:
    return name.startswith(SCRUBBED_PREFIXES) or name in SCRUBBED_NAMES


def pytest_configure(config: pytest.Config) -> None:
    # Before collection: a module that builds Settings at import must not see a developer's key.
    for name in [n for n in os.environ if _is_scrubbed(n)]:
        del os.environ[name]


#: pytest-xdist processes per core under ``-n auto``. The suite mostly waits (quota windows,
#: simulated latency, processes starting): at one process per core, the CPUs of a 2-core
#: machine were busy ~40 % of the run (user+sys of the whole run against its wall time).
WORKERS_PER_CORE = 2


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: two test processes per core the process may run on."""
    return WORKERS_PER_CORE * len(os.sched_getaffinity(0))


#: How much of each process log a failed test shows (its end: where the error is).
_LOG_TAIL_CHARS = 4000


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test shows the end of every ``*.log`` its worker, server or simulator
    processes wrote under its tmp_path: a 502 "see its logs" in CI is then read in CI's
    output, not lost with the runner's temp dir."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    funcargs = getattr(item, "funcargs", {})
    if report.when != "call" or not report.failed or "tmp_path" not in funcargs:
        return
    for log in sorted(Path(funcargs["tmp_path"]).rglob("*.log"))[:6]:
        text = log.read_text(encoding="utf-8", errors="replace")
        report.sections.append((f"process log {log.name}", text[-_LOG_TAIL_CHARS:]))


@pytest.fixture(autouse=True)
def _scrub_mimoq_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever an earlier test or fixture exported, each test starts without it."""
    for name in [n for n in os.environ if _is_scrubbed(n)]:
        monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """``mimoq.cli.main`` (via mimoq.core.logs.configure) rewires the root logger and
    structlog: each test starts from the logging the one before it found."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


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

    def close(self) -> None:
        """Stop the server for good and remove its data directory."""
        if self.process.poll() is None:
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

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
            # The AOF keeps every acknowledged write across a restart of the process (Redis
            # writes it before it replies; the page cache outlives the process), which the
            # outage and durability tests rely on. fsync guards against a machine crash,
            # which no test makes: at "always" the server blocked on the disk for each write
            # (a quarter of the write rate, shared by every test process's server).
            "--appendonly",
            "yes",
            "--appendfsync",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = sync_redis.Redis(port=port)
    deadline = time.monotonic() + 30
    while True:  # readiness: poll for PING, the server's own signal that it is up
        try:  # our own server's answer: another test's server may hold a port we picked
            info = client.info("server")
            if isinstance(info, dict) and info.get("process_id") == proc.pid:
                break
        except sync_redis.ConnectionError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            client.close()
            raise RuntimeError("redis-server did not start")
        time.sleep(0.02)
    client.close()
    return proc


def start_redis_server() -> RedisServer:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    workdir = Path(tempfile.mkdtemp(prefix="mimoq-redis-"))
    # A free port is free when picked; beside other tests (pytest -n auto) another process
    # may bind it before redis-server does, which then exits: try again on a fresh one.
    for attempt in range(3):
        port = free_port()
        try:
            return RedisServer(port=port, dir=workdir, process=_spawn(port, workdir))
        except RuntimeError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis_server()
    yield server
    server.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test alone: its ``INFO commandstats`` count nothing else's."""
    server = start_redis_server()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def own_pool(own_redis: RedisServer) -> AsyncIterator[ArqRedis]:
    """An arq client on ``own_redis``, the test's own redis-server."""
    client = ArqRedis.from_url(own_redis.url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[ArqRedis]:
    """An arq client on a flushed private Redis."""
    client = ArqRedis.from_url(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()
