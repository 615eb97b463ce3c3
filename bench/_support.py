"""Shared helpers for the benches: loopback services in their own processes, clean shutdown.

Every service (redis-server, the MiMo simulator, a callback receiver) runs as a separate
process on 127.0.0.1 and a free port, so its CPU and memory are not counted against the
process being measured. Readiness is polled on the service's own signal (PING, an HTTP
answer), never assumed after a fixed sleep. ``Services`` stops everything it started,
in reverse order, on normal exit, on an exception, on Ctrl-C and (via
``sigterm_as_interrupt``) on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import httpx
import redis as sync_redis
from starlette.types import Receive, Scope, Send

MIB = 1 << 20
BENCH_DIR = Path(__file__).resolve().parent
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0


def default_target(window_s: float) -> float:
    """The pacing target workers run at with ``MIMOQ_LIMIT_TARGET`` unset at ``window_s``
    (the default is ``auto``: chosen from the window, as ``Settings`` does)."""
    from mimoq.core.pacing import AUTO, auto_target
    from mimoq.core.settings import LimiterSettings

    default = LimiterSettings.model_fields["target"].default
    return auto_target(window_s) if default == AUTO else float(default)


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1 (``redis-server --port 0`` means no listener)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def maxrss_bytes() -> int:
    """This process's resident-set high-water mark (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_s() -> float:
    """User + system CPU seconds of this process so far (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of another process, from /proc (None where unavailable)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which is in parentheses and may itself contain spaces.
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def wait_until(
    ready: Callable[[], bool],
    *,
    what: str,
    alive: Callable[[], bool],
    timeout_s: float = START_TIMEOUT_S,
) -> None:
    """Poll ``ready`` until it holds; fail at once if ``alive`` turns false, or at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if not alive():
            raise RuntimeError(f"{what} exited before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} was not ready after {timeout_s:g} s")
        time.sleep(0.02)  # the interval between polls of a real readiness signal


@dataclass
class Service:
    """A started process, where its output goes, and the URL it serves."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str

    def alive(self) -> bool:
        return self.process.poll() is None

    def cpu_s(self) -> float | None:
        return proc_cpu_s(self.process.pid)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``STOP_TIMEOUT_S``."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Services:
    """Starts loopback services under ``workdir``; stops them all on exit (reverse order)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._started: list[Service] = []

    def __enter__(self) -> Services:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for service in reversed(self._started):
            service.stop()

    def _spawn(
        self, name: str, argv: Sequence[str], url: str, env: dict[str, str] | None = None
    ) -> Service:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                # Own session: a Ctrl-C reaches this script (and its measuring child), which
                # then stops the services in order, rather than everything dying at once.
                start_new_session=True,
            )
        service = Service(name, process, log, url)
        self._started.append(service)
        return service

    def redis(self, *, rdb: Path | None = None) -> Service:
        """A private redis-server without persistence: the benches measure the queue, not fsync.
        ``rdb``: a saved dataset it loads first (it answers once loaded)."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        port = free_port()
        data = self.workdir / "redis"
        data.mkdir()
        if rdb is not None:
            shutil.copyfile(rdb, data / "dump.rdb")  # the file a server loads at start
        service = self._spawn(
            "redis",
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(data),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            f"redis://127.0.0.1:{port}/0",
        )
        client = sync_redis.Redis(port=port)

        def pong() -> bool:
            try:
                return bool(client.ping())
            except sync_redis.ConnectionError:
                return False

        try:
            wait_until(pong, what="redis-server", alive=service.alive)
        finally:
            client.close()
        return service

    def _http(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        probe: str,
        env: dict[str, str] | None = None,
    ) -> Service:
        service = self._spawn(name, argv, f"http://127.0.0.1:{port}", env)

        def answers() -> bool:
            try:
                return httpx.get(service.url + probe, timeout=1.0).status_code == 200
            except httpx.TransportError:
                return False

        try:
            wait_until(answers, what=name, alive=service.alive)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{service.log_tail()}") from None
        return service

    def simulator(self, *flags: str) -> Service:
        """``mimoq sim`` with ``flags`` (e.g. ``--audio-bytes N``), no MIMOQ_SIM_* inherited;
        ``url`` is its base (MiMo's base URL is ``url + "/v1"``). Ready once
        ``GET /_sim/stats`` answers."""
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MIMOQ_SIM_")}
        argv = [sys.executable, "-m", "mimoq.cli", "sim", "--port", str(port), *flags]
        return self._http("simulator", argv, port, "/_sim/stats", env)

    def otlp_sink(self) -> Service:
        """An OTLP/HTTP trace endpoint (``OtlpSink`` below), served like ``receiver``."""
        return self._uvicorn("otlp-sink", "_support:otlp_sink")

    def receiver(self) -> Service:
        """A callback receiver (``callback_receiver`` below) served by uvicorn, which sets
        TCP_NODELAY; ``GET /count`` says how many callbacks arrived."""
        return self._uvicorn("receiver", "_support:callback_receiver")

    def _uvicorn(self, name: str, app: str) -> Service:
        """An ASGI app of this module on uvicorn (TCP_NODELAY); ready once /count answers."""
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(BENCH_DIR),
            app,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
            "--lifespan",
            "off",
        ]
        return self._http(name, argv, port, "/count")


class CallbackReceiver:
    """ASGI app: answers every POST with 204 at once and counts it; ``GET /count`` tells,
    with each callback's delay: its arrival less its result's ``finished_at`` (seconds)."""

    def __init__(self) -> None:
        self.count = 0
        self.delays: list[float] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:  # read the whole body, as a real receiver would before answering
            message = await receive()
            chunks.append(message.get("body", b""))
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                break
        if scope["method"] == "POST":
            self.count += 1
            self._note_delay(b"".join(chunks))
            status, body = 204, b""
        else:
            status, body = 200, json.dumps({"count": self.count, "delays": self.delays}).encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _note_delay(self, body: bytes) -> None:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            finished_at = json.loads(body).get("finished_at")
            if isinstance(finished_at, int | float):
                self.delays.append(time.time() - finished_at)


callback_receiver = CallbackReceiver()


class OtlpSink:
    """ASGI app: an OTLP/HTTP trace endpoint that answers every export at once and counts
    the spans in it (decoded with opentelemetry-proto); ``GET /count`` tells."""

    def __init__(self) -> None:
        self.exports = 0
        self.spans = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                break
        if scope["method"] == "POST":
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
                ExportTraceServiceRequest,
                ExportTraceServiceResponse,
            )

            request = ExportTraceServiceRequest()
            request.ParseFromString(bytes(body))
            self.exports += 1
            self.spans += sum(
                len(scope_spans.spans)
                for resource_spans in request.resource_spans
                for scope_spans in resource_spans.scope_spans
            )
            answer = ExportTraceServiceResponse().SerializeToString()
            headers = [(b"content-type", b"application/x-protobuf")]
        else:
            answer = json.dumps({"exports": self.exports, "spans": self.spans}).encode()
            headers = [(b"content-type", b"application/json")]
        headers.append((b"content-length", str(len(answer)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})


otlp_sink = OtlpSink()


def spans_received(sink: Service) -> int:
    """How many spans ``sink`` (``Services.otlp_sink``) has been sent so far."""
    count: int = httpx.get(sink.url + "/count", timeout=5.0).json()["spans"]
    return count


def callbacks_received(receiver: Service) -> int:
    """How many callbacks ``receiver`` has answered so far."""
    count: int = httpx.get(receiver.url + "/count", timeout=5.0).json()["count"]
    return count


def callback_delays(receiver: Service) -> list[float]:
    """Each callback's delay so far: its arrival less its result's ``finished_at`` (s)."""
    delays: list[float] = httpx.get(receiver.url + "/count", timeout=5.0).json()["delays"]
    return delays


def run_child(
    argv: Sequence[str], *, timeout_s: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run a measuring child process (killed on timeout or Ctrl-C); its last stdout line is
    its JSON report. ``env`` is added to this process's environment."""
    environ = {**os.environ, **(env or {})}
    done = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout_s, env=environ
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"child {' '.join(argv[1:])} failed ({done.returncode}):\n{done.stderr[-4000:]}"
        )
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def start_hogs(count: int) -> list[subprocess.Popen[bytes]]:
    """A busy loop per core: the loaded host the issue describes."""
    return [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
        for _ in range(count)
    ]


def stop_hogs(hogs: Sequence[subprocess.Popen[bytes]]) -> None:
    for hog in hogs:
        hog.kill()
    for hog in hogs:
        hog.wait()


def run_bench(main_async: Coroutine[Any, Any, int]) -> int:
    """Run a bench's main coroutine so that Ctrl-C or SIGTERM stops every process it started
    (its ``finally`` blocks run), and say so; 130 then, as a shell would."""
    return run_sync_bench(lambda: asyncio.run(main_async))


def run_sync_bench(main: Callable[[], int]) -> int:
    """``run_bench`` for a bench whose ``main`` runs its own event loops (one per phase)."""
    sigterm_as_interrupt()
    try:
        return main()
    except KeyboardInterrupt:
        print("interrupted: every process this bench started was stopped", file=sys.stderr)
        return 130


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def sigterm_as_interrupt() -> None:
    """Treat SIGTERM like Ctrl-C, so ``finally`` blocks and ``Services`` stop what we started."""
    signal.signal(signal.SIGTERM, _raise_interrupt)


def rss_ratio(big: int, small: int) -> str:
    """``big / small`` for ru_maxrss deltas, which move in pages: under one page is not zero."""
    page = resource.getpagesize()
    return f">= {big / page:.0f}x (below one page)" if small < page else f"{big / small:.0f}x"
