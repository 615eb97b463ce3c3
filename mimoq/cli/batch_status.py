"""``mimoq batch status RUN`` from Redis: the run's counts and ETA, whoever is watching it.

A run's record lives in Redis (``mimoq.core.runs``), so its progress and ETA can be read
from any host, with or without the ``mimoq batch`` process that started it; an embedded run
(no ``REDIS_URL``) leaves only its local journal, which ``mimoq batch status`` falls back to.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

from pydantic import ValidationError
from redis.asyncio import Redis
from rich.table import Table

from mimoq.core import deliveries, wire
from mimoq.core.connections import connect
from mimoq.core.errors import InvalidRequestError
from mimoq.core.jobs import Callback
from mimoq.core.run_events import event_job_id
from mimoq.core.settings import Settings
from mimoq.core.ssrf import check_callback_url
from mimoq.worker.run_progress import read_progress


async def redis_status(settings: Settings, run: str) -> dict[str, Any] | None:
    """The run's progress as JSON-ready data, or None without a Redis record of it."""
    if not settings.redis_url:
        return None
    redis = connect(settings)
    try:
        progress = await read_progress(redis, settings, run)
    finally:
        await redis.aclose()
    return None if progress is None else progress.to_dict()


async def run_callback(settings: Settings, url: str | None) -> dict[str, Any] | None:
    """``--callback URL``, checked as a job's callback is (a public http(s) URL)."""
    if url is None:
        return None
    try:
        callback = Callback(url=url)
    except ValidationError:
        raise InvalidRequestError(
            "--callback must be an absolute http:// or https:// URL, e.g. "
            "--callback https://hooks.example.com/mimoq",
            param="--callback",
        ) from None
    await check_callback_url(callback.url, settings)
    return callback.model_dump(mode="json")


#: How long an embedded run (no REDIS_URL) waits, once done, for its end event's first
#: attempt: its worker stops with the process, so retries would never come.
EVENT_WAIT_S: Final = 30.0


async def wait_for_event(redis: Redis, run: str, timeout_s: float) -> bool:
    """Until the run's end event was attempted once (True), or ``timeout_s`` passed."""
    delivery_id = wire.callback_job_id(event_job_id(run))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        delivery = await deliveries.load(redis, delivery_id)
        if delivery is not None and delivery.history:
            return True
        await asyncio.sleep(0.1)
    return False


async def run_eta(redis: Redis, settings: Settings, run: str) -> float | None:
    """Seconds until the run ends (``mimoq batch``'s progress bar): the same estimate."""
    progress = await read_progress(redis, settings, run)
    return None if progress is None else progress.to_dict()["eta_s"]


def _when(eta_s: float | None, eta_at: float | None) -> str:
    if eta_s is None or eta_at is None:
        return "unknown (nothing granted yet)"
    at = time.strftime("%H:%M:%S", time.localtime(eta_at))
    return f"in {eta_s:.0f} s (at {at})"


def status_table(status: dict[str, Any]) -> Table:
    table = Table(title=f"run {status['run']}", show_edge=False)
    table.add_column("jobs")
    table.add_column("", justify="right")
    for name in ("succeeded", "failed", "cancelled", "in_flight", "waiting", "total"):
        table.add_row(name.replace("_", " "), str(status[name]))
    ended = status.get("ended_at")
    if isinstance(ended, int | float):
        table.add_row("ended", "at " + time.strftime("%H:%M:%S", time.localtime(ended)))
    else:
        table.add_row("ends", _when(status["eta_s"], status["eta_at"]))
    return table
