"""Reading request bodies within limits: size, stall between chunks, and total time.

Every handler reads its body through here, so no request can hold a connection open by
trickling bytes, or fill memory or disk past the configured limits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.requests import Request

from mimoq.http.http_errors import HTTPError


@dataclass(frozen=True)
class BodyLimits:
    max_bytes: int
    idle_timeout_s: float
    total_timeout_s: float


def _too_large(limit: int, setting: str) -> HTTPError:
    return HTTPError(
        413,
        f"the request body is larger than {limit:,} bytes (raise {setting} on the server, "
        "or send less)",
        code="request_too_large",
    )


async def iter_body(request: Request, limits: BodyLimits, setting: str) -> AsyncIterator[bytes]:
    """The body chunk by chunk; HTTPError 413 past ``max_bytes``, 408 when it stalls."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_bytes:
        raise _too_large(limits.max_bytes, setting)  # refused before reading a byte
    deadline = time.monotonic() + limits.total_timeout_s
    received = 0
    stream = request.stream().__aiter__()
    while True:
        wait = min(limits.idle_timeout_s, deadline - time.monotonic())
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), timeout=max(wait, 0.0))
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise HTTPError(
                408,
                "the request body arrived too slowly: send it in one go "
                "(each pause under MIMOQ_HTTP_BODY_IDLE_TIMEOUT_S, all of it under "
                "MIMOQ_HTTP_BODY_TIMEOUT_S)",
                code="request_timeout",
                headers={"Connection": "close"},
            ) from None
        received += len(chunk)
        if received > limits.max_bytes:
            raise _too_large(limits.max_bytes, setting)
        if chunk:
            yield chunk


async def read_body(request: Request, limits: BodyLimits, setting: str) -> bytes:
    """A small body (JSON) whole, within the same limits."""
    parts = [chunk async for chunk in iter_body(request, limits, setting)]
    return b"".join(parts)
