"""uvicorn's h11 protocol with a deadline for the request head (no slowloris).

uvicorn closes idle keep-alive connections, but a client that trickles the header bytes
of a request resets that timer with every byte and can hold a connection for ever. This
protocol gives every request head a fixed deadline from the moment one may start.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class HeadTimeoutH11Protocol(H11Protocol):
    """Closes a connection whose request head is not complete ``header_timeout_s`` after
    the connection opened or the previous response ended."""

    header_timeout_s: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._head_deadline = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self.conn.their_state in (h11.IDLE,) and not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:
            self._disarm()  # the head is in: body deadlines are the handler's business

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()


def protocol_with_head_timeout(seconds: float) -> type[HeadTimeoutH11Protocol]:
    """A protocol class for uvicorn's ``http=`` with this head deadline."""
    return type("HeadTimeoutH11", (HeadTimeoutH11Protocol,), {"header_timeout_s": seconds})
