"""A producer for the CLI: on the shared Redis, or embedded with an in-process worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from arq.connections import ArqRedis

from mimoq.connections import connect, embedded
from mimoq.settings import Settings
from producer.client import Producer
from worker.app import MimoqWorker, build_worker, drain_and_close


@dataclass
class Session:
    producer: Producer
    redis: ArqRedis
    embedded: bool


@contextlib.asynccontextmanager
async def open_session(settings: Settings) -> AsyncIterator[Session]:
    """With ``REDIS_URL``: a producer on it. Without: the embedded default — an in-process
    Redis stand-in and an in-process worker, so one machine needs no server at all."""
    if settings.redis_url:
        redis = connect(settings)
        try:
            yield Session(Producer(redis, settings), redis, embedded=False)
        finally:
            await redis.aclose()
        return
    redis = embedded()
    worker: MimoqWorker = build_worker(settings, redis=redis, handle_signals=False)
    task = asyncio.create_task(worker.async_run())
    try:
        yield Session(Producer(redis, settings), redis, embedded=True)
    finally:
        await drain_and_close(worker, grace_s=settings.shutdown_grace_s)
        with contextlib.suppress(asyncio.CancelledError):
            await task
