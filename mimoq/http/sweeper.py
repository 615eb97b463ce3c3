"""Deleting uploads whose jobs are finished (asynchronous requests leave theirs behind).

A finished result is never recomputed, so once ``mimoq:result:<id>`` exists the job's
uploaded input is dead weight. Synchronous requests delete theirs as they answer; this
loop catches the rest, including uploads of a server that died mid-request.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from mimoq.core import wire

log = structlog.get_logger("mimoq.http")


def _listing(uploads: Path, stale_part_s: float) -> tuple[list[Path], list[Path]]:
    """(uploads with a job id, partial uploads abandoned long ago); blocking, run in a thread."""
    if not uploads.is_dir():
        return [], []
    now = time.time()
    complete: list[Path] = []
    stale: list[Path] = []
    for path in uploads.iterdir():
        job_id, _, suffix = path.name.partition(".")
        with contextlib.suppress(FileNotFoundError):
            if not job_id or not path.is_file():
                continue
            if not suffix.endswith("part"):
                complete.append(path)
            elif now - path.stat().st_mtime > stale_part_s:  # its request died long ago
                stale.append(path)
    return complete, stale


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


async def sweep_once(redis: Redis, uploads: Path, *, stale_part_s: float) -> int:
    """Remove uploads of finished jobs, and partial uploads older than ``stale_part_s``."""
    complete, stale = await asyncio.to_thread(_listing, uploads, stale_part_s)
    finished = [
        path
        for path in complete
        if await redis.exists(wire.result_key(path.name.partition(".")[0]))
    ]
    await asyncio.to_thread(_remove, finished + stale)
    return len(finished) + len(stale)


async def sweep_forever(
    redis: Redis, uploads: Path, *, interval_s: float, stale_part_s: float
) -> None:
    while True:
        with contextlib.suppress(RedisError, OSError):
            removed = await sweep_once(redis, uploads, stale_part_s=stale_part_s)
            if removed:
                log.info("http.uploads_swept", removed=removed)
        await asyncio.sleep(interval_s)
