"""Stop a job this worker holds when it is cancelled (docs/cancel.md).

Each job's attempt runs in its own task, registered here under the job id. One
subscription per worker process listens on ``mimoq:cancel`` (cancel.lua publishes the id of
every cancelled job a worker holds) and cancels that task: the MiMo request is closed as
the task unwinds (httpx closes the connection), the partial output is removed by the
writers' own clean-up, and the runner records the job as ``cancelled``. If the
subscription was down when a cancel was published, the job's marker is read on
resubscribing; and a job not yet granted never gets its call (the acquire script reads the
marker), so a lost message costs at most a call already under way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import structlog
from redis.asyncio import Redis

from mimoq.core import wire
from mimoq.core.cancel_script import is_cancelled
from mimoq.core.errors import JobCancelled
from mimoq.worker import channel_watch

log = structlog.get_logger("mimoq.worker")
T = TypeVar("T")


class RunningJobs:
    """The attempts this worker is running, by job id, and the ones it was told to stop."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[object]] = {}
        self._stopped: set[str] = set()

    async def run(self, job_id: str, attempt: Awaitable[T]) -> T:
        """Run ``attempt`` in its own task; raises ``JobCancelled`` if a cancel stopped it."""
        task: asyncio.Task[T] = asyncio.ensure_future(attempt)
        self._tasks[job_id] = task
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if job_id in self._stopped and (current is None or current.cancelling() == 0):
                raise JobCancelled("the job was cancelled while it ran") from None
            raise
        finally:
            self._tasks.pop(job_id, None)
            self._stopped.discard(job_id)
            if not task.done():  # our own task was cancelled (shutdown): take the attempt down
                task.cancel()

    def stop(self, job_id: str) -> bool:
        """Cancel ``job_id``'s attempt if this worker runs it; True if it did."""
        task = self._tasks.get(job_id)
        if task is None or task.done():
            return False
        self._stopped.add(job_id)
        task.cancel()
        log.info("job.cancel_requested", job_id=job_id)
        return True

    def ids(self) -> list[str]:
        return list(self._tasks)


async def _stop_marked(redis: Redis, running: RunningJobs) -> None:
    """After (re)subscribing: stop the jobs whose cancel may have been published unseen."""
    ids = running.ids()
    if not ids:
        return
    markers = await redis.mget([wire.cancel_key(i) for i in ids])
    for job_id, marker in zip(ids, markers, strict=True):
        if is_cancelled(marker):
            running.stop(job_id)


async def watch(redis: Redis, running: RunningJobs) -> None:
    """The worker-wide subscription (runs until cancelled at shutdown). A Redis without
    pub/sub (the embedded stand-in): cancels still hold before the grant (the acquire script
    reads the marker); in-flight ones run out."""

    async def stop(job_id: str) -> None:
        running.stop(job_id)

    await channel_watch.listen(
        redis,
        wire.CANCEL_CHANNEL,
        "cancel_watch",
        on_subscribed=lambda: _stop_marked(redis, running),
        on_message=stop,
    )
