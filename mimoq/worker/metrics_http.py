"""The worker's HTTP endpoint: Prometheus metrics at ``/metrics``, liveness at ``/healthz``.

Served from a daemon thread (prometheus-client's WSGI app on the stdlib server), so a
scrape never competes with jobs for the event loop. That thread answers even when the loop
is stuck, which is why ``/healthz`` does not just answer 200: it reports the heartbeat's
verdict on whether arq's polling loop is still turning.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import REGISTRY, make_wsgi_app
from prometheus_client.registry import Collector

from mimoq.core.errors import ConfigurationError
from mimoq.worker.heartbeat import Liveness

METRICS_PATH: Final = "/metrics"
HEALTH_PATH: Final = "/healthz"
_STOP_POLL_S: Final = 0.1


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scraper never holds up the worker's exit

    def get_request(self) -> tuple[socket.socket, object]:
        conn, addr = super().get_request()
        # Small answers on loopback: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, addr


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Scrapes every few seconds would drown the worker's own log lines."""


def _respond(start_response: StartResponse, status: str, body: bytes) -> list[bytes]:
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def make_app(liveness: Callable[[], Liveness], registry: Collector = REGISTRY) -> WSGIApplication:
    """The WSGI app: ``/metrics`` (and ``/``) from ``registry``, ``/healthz`` from ``liveness``."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == HEALTH_PATH:
            state = liveness()
            status = "200 OK" if state.ok else "503 Service Unavailable"
            return _respond(start_response, status, json.dumps(state.to_dict()).encode())
        if path in (METRICS_PATH, "/"):
            body: Iterable[bytes] = metrics_app(environ, start_response)
            return body
        return _respond(start_response, "404 Not Found", b'{"error": "not found"}')

    return app


class MetricsServer:
    """A running endpoint; ``port`` is the bound one (useful when asked for port 0)."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.host: str = str(server.server_address[0])
        self.port: int = int(server.server_address[1])

    @classmethod
    def start(cls, host: str, port: int, *, liveness: Callable[[], Liveness]) -> MetricsServer:
        """Bind and serve from a daemon thread; a port in use is a configuration error."""
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
            server_class = type("_BoundServer", (_Server,), {"address_family": family})
            server: WSGIServer = make_server(
                host, port, make_app(liveness), server_class, handler_class=_QuietHandler
            )
        except (OSError, OverflowError) as exc:  # in use, not an address, out of range
            reason = getattr(exc, "strerror", None) or exc
            raise ConfigurationError(
                f"cannot serve metrics on {host}:{port} ({reason}): set "
                "MIMOQ_METRICS_PORT to a free port, or 0 to turn the endpoint off"
            ) from None
        thread = threading.Thread(
            target=server.serve_forever,
            # How often it checks for stop(): bounds how long a worker's exit waits on it.
            kwargs={"poll_interval": _STOP_POLL_S},
            name="mimoq-metrics",
            daemon=True,
        )
        thread.start()
        return cls(server, thread)

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
