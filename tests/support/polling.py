"""Polling a real condition with a deadline: the one way the tests wait for something.

Deadlines are generous (the host is shared and loaded); a check that holds returns at once.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any, Final

#: Seconds a check may take to hold before the test fails.
DEFAULT_TIMEOUT_S: Final = 60.0
#: Seconds between two checks.
POLL_S: Final = 0.02


def wait_until(
    check: Callable[[], Any], timeout_s: float = DEFAULT_TIMEOUT_S, what: str = "condition"
) -> Any:
    """Poll ``check`` until it returns something truthy, and return that; fail after
    ``timeout_s``. Blocks: for tests whose services run in other threads or processes."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(POLL_S)


async def eventually(
    check: Callable[[], Any], timeout_s: float = DEFAULT_TIMEOUT_S, what: str = "it"
) -> Any:
    """``wait_until`` for tests sharing the event loop with what they wait for: yields
    while polling. ``check`` may return an awaitable (then it is awaited)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if inspect.isawaitable(got):
            got = await got
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(POLL_S)
