"""A producer for the CLI: on the shared Redis, or embedded with an in-process worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from arq.connections import ArqRedis

from mimoq.core.connections import connect, embedded
from mimoq.core.errors import InternalError
from mimoq.core.settings import Settings
from mimoq.producer.client import Producer
from mimoq.worker.app import MimoqWorker, build_worker, drain_and_close


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
    session_task = asyncio.current_task()

    def worker_stopped(done: asyncio.Task[None]) -> None:
        # A dead in-process worker would leave the producer waiting forever: stop waiting.
        if not done.cancelled() and done.exception() is not None and session_task is not None:
            session_task.cancel()

    task.add_done_callback(worker_stopped)
    try:
        yield Session(Producer(redis, settings), redis, embedded=True)
    except asyncio.CancelledError:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise InternalError(f"the embedded worker stopped: {task.exception()!r}") from None
        raise
    finally:
        task.remove_done_callback(worker_stopped)
        if worker.main_task is None:  # the worker never started: nothing is in flight
            task.cancel()
        await drain_and_close(worker, grace_s=settings.shutdown_grace_s)
        with contextlib.suppress(asyncio.CancelledError):
            await task
