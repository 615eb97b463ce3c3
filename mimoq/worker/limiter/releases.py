"""A worker's lease releases, sent to Redis a model at a time in batches.

Every MiMo call ends with a release (limiter_release.lua): its lease freed, its tokens
settled, its latency and grant-to-send lag folded into the model's averages. Sent one by
one that was one ``FCALL`` per job, each reading and writing the model's state hash: 13 % of
the mix's server time in scripts (``bench/redis_cost.py --by-script``, issue #22). A
release is not waited for by anything but the lease's own bookkeeping, so the releases of
one model that end within ``linger_s`` of the first are sent together, after it, in one
call that reads and writes the state once.

Only a release is late, never a grant: the in-flight count (a display, unless a cap is set:
then the limiter sends each release at once, ``LimiterConfig.release_linger_s``) and a
transcription's settled tokens lag by ``linger_s`` at most (its estimate, which stood for
the whole call, stands that much longer). A batch that cannot be sent (Redis gone) is
logged and dropped: its leases expire as a dead worker's do, and its estimates stand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from redis.exceptions import RedisError

log = structlog.get_logger("mimoq.limiter")

#: Sends one model's batch: (model, the calls in the order they ended).
SendBatch = Callable[[str, list[Mapping[str, Any]]], Awaitable[None]]


class ReleaseBatcher:
    """Collects releases per model and sends each model's after ``linger_s``."""

    def __init__(self, send: SendBatch, *, linger_s: float) -> None:
        self._send = send
        self._linger_s = linger_s
        self._pending: dict[str, list[Mapping[str, Any]]] = {}
        # per model, the timer of its open batch: it only sleeps, then starts the send
        self._timers: dict[str, asyncio.Task[None]] = {}
        # the sends under way (kept referenced until done; flush waits for them)
        self._sending: set[asyncio.Task[None]] = set()

    def add(self, model: str, call: Mapping[str, Any]) -> None:
        """Queue one release; the first of a batch starts its timer."""
        self._pending.setdefault(model, []).append(call)
        if model not in self._timers:
            self._timers[model] = asyncio.create_task(self._after_linger(model))

    def pending(self) -> int:
        """Releases queued and not yet sent."""
        return sum(len(calls) for calls in self._pending.values())

    async def flush(self) -> None:
        """Send everything queued now, and wait for the sends under way (a worker shutting
        down, a test that reads the state next)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for model in list(self._pending):
            await self._send_now(model)
        if self._sending:
            await asyncio.gather(*self._sending)

    async def _after_linger(self, model: str) -> None:
        await asyncio.sleep(self._linger_s)
        # no await between here and the send's start: a release queued from now on opens
        # the next batch, and a flush that cancels this timer finds nothing sent twice
        self._timers.pop(model, None)
        send = asyncio.create_task(self._send_now(model))
        self._sending.add(send)
        send.add_done_callback(self._sending.discard)

    async def _send_now(self, model: str) -> None:
        calls = self._pending.pop(model, [])
        if not calls:
            return
        try:
            await self._send(model, calls)
        except RedisError as exc:
            log.warning(
                "limiter.release_failed", model=model, releases=len(calls),
                error=type(exc).__name__,
            )  # fmt: skip
