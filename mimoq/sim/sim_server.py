"""Running the simulator: on a background thread (tests, demo, benchmarks) or in the foreground."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Final

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from mimoq.sim.sim_app import SimApp, SimulatedDisconnectError, create_app
from mimoq.sim.sim_config import DEFAULT_HOST, DEFAULT_PORT, SimConfig
from mimoq.sim.state import SimState

#: Requests still running at stop() get this long before uvicorn cancels them.
GRACEFUL_SHUTDOWN_S: Final = 2
START_TIMEOUT_S: Final = 10.0


class SimulatorStartError(RuntimeError):
    """The simulator's server thread ended, or did not come up in time."""


class _DropDisconnectTraces(logging.Filter):
    # A ``disconnect`` fault is an exception on purpose: keep uvicorn from logging a traceback.
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, SimulatedDisconnectError)


def _quiet_disconnects() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DropDisconnectTraces) for f in logger.filters):
        logger.addFilter(_DropDisconnectTraces())


def _uvicorn_config(app: SimApp, host: str, port: int, *, embedded: bool) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=False,  # one line per request would drown benchmarks and test output
        lifespan="on",
        # Embedded in a test or the demo, leave the host program's logging configuration alone.
        log_config=None if embedded else LOGGING_CONFIG,
        log_level="warning" if embedded else "info",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )


class _Server(uvicorn.Server):
    """uvicorn's server with an event set once it listens (``started`` is a plain flag)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.ready.set()


class RunningSim:
    """A simulator serving on a background thread; ``url`` is its MiMo base URL (``.../v1``)."""

    def __init__(
        self, app: SimApp, server: _Server, thread: threading.Thread, sock: socket.socket
    ) -> None:
        self.app = app
        self._server = server
        self._thread = thread
        self._sock = sock
        self.host, self.port = sock.getsockname()[:2]

    @property
    def base(self) -> str:
        """``http://host:port``: the control API lives at ``base + "/_sim/..."``."""
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The base URL a MiMo client is configured with (``MIMO_BASE_URL``)."""
        return self.base + "/v1"

    @property
    def state(self) -> SimState:
        """In-process faults and statistics (the same ones the HTTP control API reaches)."""
        return self.app.state

    def stop(self, timeout_s: float = GRACEFUL_SHUTDOWN_S + 5.0) -> None:
        """Stop serving and join the thread (idempotent)."""
        self._server.should_exit = True
        self._thread.join(timeout_s)
        self._sock.close()

    def __enter__(self) -> RunningSim:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _bind(host: str, port: int) -> socket.socket:
    # Binding here (port 0 = any free port) means the port is known before uvicorn starts.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def start_in_thread(config: SimConfig, *, host: str = DEFAULT_HOST, port: int = 0) -> RunningSim:
    """Serve a new simulator on ``host:port`` (0: a free port) from a daemon thread.

    Returns once uvicorn listens. Use as a context manager, or call ``stop()``.
    """
    app = create_app(config)
    sock = _bind(host, port)
    server = _Server(_uvicorn_config(app, host, port, embedded=True))
    _quiet_disconnects()
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="mimoq-sim", daemon=True
    )
    thread.start()
    # Wait on uvicorn's own readiness, checking the thread is alive so a failed start
    # surfaces at once instead of after the whole timeout.
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.ready.wait(0.05):
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise SimulatorStartError(f"simulator did not start on {host}:{port}")
    return RunningSim(app, server, thread, sock)


@asynccontextmanager
async def run_sim(
    config: SimConfig, *, host: str = DEFAULT_HOST, port: int = 0
) -> AsyncIterator[RunningSim]:
    """``async with run_sim(config) as sim:`` — ``start_in_thread`` without blocking the loop."""
    sim = await asyncio.to_thread(start_in_thread, config, host=host, port=port)
    try:
        yield sim
    finally:
        await asyncio.to_thread(sim.stop)


def serve_sim(config: SimConfig, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve in the foreground until interrupted (what ``mimoq sim`` runs)."""
    server = uvicorn.Server(_uvicorn_config(create_app(config), host, port, embedded=False))
    _quiet_disconnects()
    logging.getLogger("uvicorn.error").info(
        "MiMo simulator: point clients at MIMO_BASE_URL=http://%s:%d/v1 (control API: /_sim/)",
        host,
        port,
    )
    server.run()
