"""The enqueue side: validate a job at the edge, enqueue it atomically, follow it to its result."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis
from redis.exceptions import ResponseError

from mimoq.core import wire
from mimoq.core.errors import InvalidRequestError
from mimoq.core.jobs import JobResult, SpeechJob, TranscriptionJob, parse_job
from mimoq.core.results import StatusReport, job_status, read_result
from mimoq.core.settings import Settings
from mimoq.core.sources import inspect_audio, normalize_reference
from mimoq.core.ssrf import check_callback_url

AnyJob = SpeechJob | TranscriptionJob


@dataclass(frozen=True)
class Enqueued:
    job_id: str
    created: bool  # False: a job or result with this id already existed (idempotent no-op)


class Producer:
    """Validates and enqueues jobs; reads their status and results."""

    def __init__(self, redis: ArqRedis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self._script = redis.register_script(wire.enqueue_script())

    async def validate(self, job: Mapping[str, Any] | AnyJob) -> AnyJob:
        """Everything the worker would refuse, refused here, before anything is enqueued."""
        parsed = parse_job(job)
        updates: dict[str, Any] = {}
        if isinstance(parsed, TranscriptionJob):
            updates["file"] = normalize_reference(parsed.file)
            inspect_audio(updates["file"], param="file")
        elif parsed.model == "mimo-v2.5-tts-voiceclone" and parsed.voice:
            updates["voice"] = normalize_reference(parsed.voice)
            inspect_audio(updates["voice"], param="voice")
        if parsed.callback is not None:
            await check_callback_url(parsed.callback.url, self.settings)
        if parsed.id is None:
            updates["id"] = uuid.uuid4().hex
        return parsed.model_copy(update=updates) if updates else parsed

    async def enqueue(self, job: Mapping[str, Any] | AnyJob, *, defer_s: float = 0.0) -> Enqueued:
        """Validate and enqueue; a second enqueue of the same ``id`` is a no-op."""
        checked = await self.validate(job)
        assert checked.id is not None
        text = wire.dumps(checked.model_dump(mode="json", exclude_none=True))
        try:
            created = await self._script(
                keys=wire.enqueue_keys(checked.id), args=[checked.id, text, int(defer_s * 1000)]
            )
        except ResponseError as exc:  # the script's own refusals
            raise InvalidRequestError(str(exc).removeprefix("invalid_request_error: ")) from None
        return Enqueued(job_id=checked.id, created=bool(created))

    async def status(self, job_id: str) -> StatusReport:
        return await job_status(self.redis, job_id)

    async def result(self, job_id: str) -> JobResult | None:
        return await read_result(self.redis, job_id)

    async def wait(self, job_id: str, *, timeout_s: float | None = None) -> JobResult:
        """Poll the result record until it exists; ``TimeoutError`` after ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        interval = 0.02
        while True:
            result = await read_result(self.redis, job_id)
            if result is not None:
                return result
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} has no result after {timeout_s:g} s")
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, 0.5)
