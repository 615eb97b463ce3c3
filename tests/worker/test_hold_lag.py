"""The time ``acquire`` waits in-process for its slot is not grant-to-send lag."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import httpx

from mimoq.worker.accounts.router import Account, AccountRouter
from mimoq.worker.limiter import Lease
from mimoq.worker.mimo_client import MimoClient


class HoldingLimiter:
    """Grants after having waited ``held_s`` for the slot; records what release was told."""

    def __init__(self, held_s: float) -> None:
        self.held_s = held_s
        self.lags: list[float | None] = []

    async def acquire(
        self,
        model: str,
        *,
        job_id: str,
        audio_s: float | None = None,
        lane: str = "interactive",
        tenant: str | None = None,
    ) -> Lease:
        await asyncio.sleep(self.held_s)  # the in-process wait for the slot (the behaviour)
        return Lease(model, "lease", 0, audio_s, granted_at=1.0, held_s=self.held_s)

    async def release(
        self,
        lease: Lease,
        *,
        usage: Mapping[str, Any] | None,
        latency_s: float | None,
        lag_s: float | None = None,
    ) -> None:
        self.lags.append(lag_s)

    async def admit(self, model: str) -> int:
        return 0

    async def rate_limited(self, model: str, retry_after_s: float | None) -> None:
        return None


async def test_the_lag_reported_leaves_out_the_in_process_wait() -> None:
    limiter = HoldingLimiter(held_s=0.5)
    async with httpx.AsyncClient() as http:
        client = MimoClient(http, base_url="http://127.0.0.1:9/v1", api_key=None)
        router = AccountRouter([Account(name="a", limiter=limiter, clients=[client])])
        async with router.call("mimo-v2.5-tts", job_id="j", audio_s=None, usage={}):
            pass
    (lag,) = limiter.lags
    # counted as lag, the hold would widen the guard's margin to its cap
    assert lag is not None and 0.0 <= lag < 0.25
