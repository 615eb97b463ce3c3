"""A loopback HTTP receiver for tests: records requests, answers from a programmable queue.

Usage::

    with Receiver() as rx:                       # listening on 127.0.0.1:<free port>
        rx.respond(Response(500), Response(200)) # then 200 (the default) for the rest
        ... point a client at rx.url("/hook") ...
        [first, second] = rx.wait_for(2, timeout=5)
        first.headers["webhook-id"], first.body, first.json()

    rx.down()   # port closed: connections are refused
    rx.up()     # listening again on the same port

``Response(hold=event)`` keeps that answer back until the event is set (or the receiver
closes), which is how a test makes a client time out without sleeping. Pass an
``ssl.SSLContext`` to serve HTTPS. Accepted sockets get TCP_NODELAY: without it, Nagle
plus delayed ACK cost ~40 ms per request on loopback.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Request:
    """One request as received; header names are lower-cased."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float  # time.monotonic()

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Response:
    """One programmed answer."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    hold: threading.Event | None = None  # answer only once this is set
    #: send the status line, headers and ``body``, then stall (the promised rest of the
    #: body never comes) until this is set: a receiver that answers 2xx and then hangs
    stall_body: threading.Event | None = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # so that up() can bind the same port again at once

    def __init__(self, receiver: Receiver, port: int) -> None:
        self.receiver = receiver
        super().__init__(("127.0.0.1", port), _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.receiver.ssl_context is not None:
            sock = self.receiver.ssl_context.wrap_socket(sock, server_side=True)
        return sock, addr


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _handle(self) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        body = self._read_body(headers)
        receiver = self.server.receiver
        answer = receiver._record(Request(self.command, self.path, headers, body, time.monotonic()))
        if answer.hold is not None:
            answer.hold.wait()
        try:
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            promised = len(answer.body) + (1_000_000 if answer.stall_body is not None else 0)
            self.send_header("Content-Length", str(promised))
            self.end_headers()
            self.wfile.write(answer.body)
            if answer.stall_body is not None:
                self.wfile.flush()
                answer.stall_body.wait()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the client stopped reading (timeouts, response-size caps): its right

    def _read_body(self, headers: dict[str, str]) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(headers.get("content-length") or 0))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean


class Receiver:
    """A threaded HTTP(S) server on 127.0.0.1; see the module docstring."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.port = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._requests: list[Request] = []
        self._queue: deque[Response] = deque()
        self._holds: list[threading.Event] = []

    # -- lifecycle -------------------------------------------------------------------------

    def up(self) -> Receiver:
        """Start listening (on a free port the first time, on the same port afterwards)."""
        if self._server is None:
            self._server = _Server(self, self.port)
            self.port = self._server.server_address[1]
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._thread.start()
        return self

    start = up

    def down(self) -> None:
        """Stop listening and close the port (clients get 'connection refused')."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def close(self) -> None:
        with self._cond:
            for hold in self._holds:
                hold.set()  # never leave a handler thread waiting forever
        self.down()

    def __enter__(self) -> Receiver:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- programming and observing -----------------------------------------------------------

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    def url(self, path: str = "/", *, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def respond(self, *responses: Response) -> None:
        """Queue answers for the next requests, in order; afterwards the default is 200."""
        with self._cond:
            self._queue.extend(responses)
            self._holds.extend(r.hold for r in responses if r.hold is not None)
            self._holds.extend(r.stall_body for r in responses if r.stall_body is not None)

    @property
    def requests(self) -> list[Request]:
        with self._cond:
            return list(self._requests)

    def wait_for(self, n: int, timeout: float = 5.0) -> list[Request]:
        """Block until at least ``n`` requests arrived; TimeoutError after ``timeout`` s."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._requests) >= n, timeout):
                raise TimeoutError(f"{len(self._requests)} of {n} requests arrived in {timeout} s")
            return list(self._requests)

    def _record(self, request: Request) -> Response:
        with self._cond:
            self._requests.append(request)
            self._cond.notify_all()
            return self._queue.popleft() if self._queue else Response()
