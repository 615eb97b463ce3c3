"""A producer for the CLI: on the shared Redis, or embedded with an in-process worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from arq.connections import ArqRedis

from mimoq.core.connections import connect, embedded
from mimoq.core.errors import InternalError
from mimoq.core.settings import Settings
from mimoq.producer.client import Producer
from mimoq.worker.app import MimoqWorker, build_worker, drain_and_close


async def _nothing_to_stop(grace_s: float) -> None:
    return None


@dataclass
class Session:
    producer: Producer
    redis: ArqRedis
    embedded: bool
    _stop: Callable[[float], Awaitable[None]] = _nothing_to_stop

    async def stop_worker(self, grace_s: float) -> None:
        """Embedded: stop taking jobs and give in-flight ones ``grace_s`` to finish (the
        rest are cancelled); their results stay readable until the session closes. A no-op
        on a shared Redis, whose workers go on by themselves, and when already stopped."""
        await self._stop(grace_s)


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
    stopped = False

    async def stop(grace_s: float) -> None:
        nonlocal stopped
        if stopped:
            return
        stopped = True
        task.remove_done_callback(worker_stopped)
        if worker.main_task is None:  # the worker never started: nothing is in flight
            task.cancel()
        await drain_and_close(worker, grace_s=grace_s)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        yield Session(Producer(redis, settings), redis, embedded=True, _stop=stop)
    except asyncio.CancelledError:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise InternalError(f"the embedded worker stopped: {task.exception()!r}") from None
        raise
    finally:
        await stop(settings.shutdown_grace_s)
