"""A producer for the CLI: on the shared Redis, or embedded with an in-process worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from arq.connections import ArqRedis

from mimoq.core.connections import connect, embedded
from mimoq.core.errors import InternalError
from mimoq.core.keypool import has_key, no_key_error, usable_pool
from mimoq.core.objstore import open_storage
from mimoq.core.settings import Settings
from mimoq.producer.client import Producer


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


def require_key(settings: Settings, *, calls_mimo: bool) -> None:
    """Stop at once, with one clear line, when this process would call MiMo without a key
    (or with a key that cannot work: ``usable_pool`` names the variable to fix).

    ``calls_mimo``: the process runs a worker (``mimoq worker``, or the embedded default
    without ``REDIS_URL``); a producer on a shared Redis needs no key, its workers have them.
    An explicit ``MIMO_BASE_URL`` (the simulator) needs none either.
    """
    if calls_mimo and settings.mimo.base_url is None and not has_key(settings):
        raise no_key_error()
    if calls_mimo:
        usable_pool(settings)  # a tp- key without a region, a key on the other host: say so now


@contextlib.asynccontextmanager
async def open_session(settings: Settings) -> AsyncIterator[Session]:
    """With ``REDIS_URL``: a producer on it. Without: the embedded default — an in-process
    Redis stand-in and an in-process worker, so one machine needs no server at all."""
    storage = open_storage(settings)
    if settings.redis_url:
        redis = connect(settings)
        producer = Producer(redis, settings, storage)
        try:
            yield Session(producer, redis, embedded=False)
        finally:
            await producer.aclose()
            await redis.aclose()
        return
    require_key(settings, calls_mimo=True)
    # Imported here: `mimoq status` or `speak` on a shared Redis needs no worker, and the
    # worker's imports (numpy among them) are a third of a command's start-up.
    from mimoq.worker.arq_worker import build_worker, drain_and_close

    redis = embedded()
    # One process with a person waiting: a revoked key or an empty balance is an error to
    # show now, not a pause to wait out (a fleet's workers pause the account instead).
    worker = build_worker(settings, redis=redis, handle_signals=False, account_breaker=False)
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

    producer = Producer(redis, settings, storage)
    try:
        yield Session(producer, redis, embedded=True, _stop=stop)
    except asyncio.CancelledError:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise InternalError(f"the embedded worker stopped: {task.exception()!r}") from None
        raise
    finally:
        await producer.aclose()
        await stop(settings.worker.shutdown_grace_s)
