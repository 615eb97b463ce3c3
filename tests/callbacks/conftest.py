"""Fixtures for callback delivery tests: receivers, settings, results and a real arq worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.worker import Worker, func

from mimoq.core import wire
from mimoq.core.jobs import Callback, CallbackState, CallbackStatus, JobResult
from mimoq.core.settings import Settings
from mimoq.worker import callback_delivery
from tests.conftest import RedisServer
from tests.support.receiver import Receiver

# Two Standard Webhooks secrets (as in the spec's examples): rotation signs with both.
SECRET_A = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRET_B = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as rx:
        yield rx


def make_settings(**changes: Any) -> Settings:
    """Time-compressed, loopback-allowed settings for delivery tests; ``changes`` as for
    ``Settings.updated`` (``callbacks={"schedule_s": "0"}`` keeps the other callback values)."""
    return Settings(
        callbacks={
            "schedule_s": "0,0.05,0.1",
            "jitter": 0.0,
            "timeout_s": 5.0,
            "allow_networks": "127.0.0.0/8",
            "secret": SECRET_A,
        }
    ).updated(**changes)


def make_result(job_id: str = "job-1", *, pending: bool = True) -> JobResult:
    result = JobResult(
        id=job_id,
        kind="speech",
        status="succeeded",
        model="mimo-v2.5-tts",
        text=None,
        metadata={"order": 7, "note": "naïve ☃"},
        finished_at=1_700_000_000.5,
    )
    if pending:
        result.callback = CallbackState(
            status=CallbackStatus.pending, delivery_id=wire.callback_job_id(job_id)
        )
    return result


async def store_result(redis: ArqRedis, result: JobResult, *, ttl_s: int = 3600) -> None:
    """Write the record as the worker's runner does before scheduling the callback."""
    record = wire.dumps(result.model_dump(mode="json"))
    await redis.set(wire.result_key(result.id), record, ex=ttl_s)


async def read_state(redis: ArqRedis, job_id: str) -> CallbackState:
    raw = await redis.get(wire.result_key(job_id))
    assert raw is not None
    return JobResult.model_validate_json(raw).callback


async def schedule(
    redis: ArqRedis,
    receiver: Receiver,
    *,
    job_id: str = "job-1",
    path: str = "/hook",
    headers: dict[str, str] | None = None,
    url: str | None = None,
    store: bool = True,
) -> str:
    result = make_result(job_id)
    if store:
        await store_result(redis, result)
    callback = Callback(url=url or receiver.url(path), headers=headers or {})
    return await callback_delivery.schedule_callback(redis, result, callback)


@asynccontextmanager
async def worker_running(
    redis_server: RedisServer, settings: Settings, **ctx_extra: Any
) -> AsyncIterator[Worker]:
    """A real arq worker (burst mode) with the production options, running as a task.

    Leaving the block waits (with a deadline) for the queue to drain, then closes it.
    """
    pool = ArqRedis.from_url(redis_server.url)

    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx["settings"] = settings
        ctx.update(ctx_extra)
        await callback_delivery.open_callback_client(ctx)

    worker = Worker(
        functions=[func(callback_delivery.deliver_callback, name=wire.TASK_CALLBACK)],
        redis_pool=pool,
        queue_name=wire.QUEUE_NAME,
        job_serializer=wire.serialize,
        job_deserializer=wire.deserialize,
        keep_result=0,
        max_tries=len(settings.callbacks.schedule_s) + 10,
        poll_delay=0.01,
        burst=True,
        handle_signals=False,
        on_startup=on_startup,
        on_shutdown=callback_delivery.close_callback_client,
    )
    task = asyncio.create_task(worker.main())
    try:
        yield worker
        await asyncio.wait_for(asyncio.shield(task), timeout=20)
    finally:
        if not task.done():
            task.cancel()
        await worker.close()


async def run_worker(redis_server: RedisServer, settings: Settings, **ctx_extra: Any) -> None:
    """Run a burst worker until every queued delivery is finished."""
    async with worker_running(redis_server, settings, **ctx_extra):
        pass


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout: float = 60.0) -> None:
    """Poll a real signal (e.g. a Redis record) until true; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        await asyncio.sleep(0.01)
