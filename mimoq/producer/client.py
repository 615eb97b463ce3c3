"""The enqueue side: validate a job at the edge, enqueue it atomically, follow it to its result."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arq.connections import ArqRedis
from redis.exceptions import ResponseError

from mimoq.core import scripts, tracing, wire
from mimoq.core.connections import connect
from mimoq.core.errors import ConfigurationError, InvalidRequestError
from mimoq.core.inputs import confine, input_roots, ref_kind
from mimoq.core.jobs import JobResult, SpeechJob, TranscriptionJob, parse_job
from mimoq.core.objstore import open_storage
from mimoq.core.results import StatusReport, job_status, read_result
from mimoq.core.settings import Settings
from mimoq.core.sources import inspect_audio, normalize_reference
from mimoq.core.ssrf import check_callback_url
from mimoq.core.staging import stage_file
from mimoq.core.storage import Storage
from mimoq.producer.cancel import CancelAnswer, cancel_jobs
from mimoq.producer.result_watch import ResultWatch

AnyJob = SpeechJob | TranscriptionJob
#: A wait reads the record this often even without a message (one may be missed).
FALLBACK_S = 5.0
#: The enqueue script's bound on a defer (one year), checked here before a round trip.
_MAX_DEFER_S = 365 * 86_400


@dataclass(frozen=True)
class Enqueued:
    job_id: str
    created: bool  # False: a job or result with this id already existed (idempotent no-op)


class Producer:
    """Validates and enqueues jobs; reads their status and results."""

    def __init__(
        self,
        redis: ArqRedis,
        settings: Settings,
        storage: Storage | None = None,
        *,
        owns_redis: bool = False,
    ) -> None:
        self.redis = redis
        self.settings = settings
        # With a storage, local inputs outside the input roots are uploaded to it first
        # (the CLI, from_env); without one, they are refused as a worker would.
        self.storage = storage
        self._watch = ResultWatch(redis)
        self._owns_redis = owns_redis

    @classmethod
    def from_env(cls) -> Producer:
        """A producer configured as the ``mimoq`` command is: ``REDIS_URL``, every
        ``MIMOQ_*`` setting, and the storage local inputs are uploaded to. Close it with
        ``aclose()`` (or use it as ``async with``).

        ``REDIS_URL`` is required: without it the CLI runs an in-process worker on an
        in-process Redis, which a library process does not have, so nothing would ever
        run the jobs. Run ``mimoq worker`` on a Redis and point ``REDIS_URL`` at it."""
        settings = Settings()
        if not settings.redis_url:
            raise ConfigurationError(
                "Producer.from_env needs REDIS_URL (e.g. redis://localhost:6379/0), the Redis "
                "your workers (`mimoq worker`) read: a library process has no embedded worker "
                "of its own to run jobs"
            )
        return cls(connect(settings), settings, open_storage(settings), owns_redis=True)

    async def validate(self, job: Mapping[str, Any] | AnyJob) -> AnyJob:
        """Everything the worker would refuse, refused here, before anything is enqueued."""
        parsed = parse_job(job)
        updates: dict[str, Any] = {}
        if isinstance(parsed, TranscriptionJob):
            updates["file"] = await self._check_audio(parsed.file, "file")
        elif parsed.model == "mimo-v2.5-tts-voiceclone" and parsed.voice:
            updates["voice"] = await self._check_audio(parsed.voice, "voice")
        if parsed.callback is not None:
            await check_callback_url(parsed.callback.url, self.settings)
        if parsed.id is None:
            updates["id"] = uuid.uuid4().hex
        return parsed.model_copy(update=updates) if updates else parsed

    async def _check_audio(self, ref: str, param: str) -> str:
        """The reference as the job will carry it, after the checks a worker would make."""
        ref = normalize_reference(ref)
        kind = ref_kind(ref)
        roots = input_roots(self.settings)
        if kind == "local" and self.storage is not None:
            ref = await asyncio.to_thread(self._stage, ref, param, roots)
        if ref_kind(ref) in ("local", "data"):
            await asyncio.to_thread(inspect_audio, ref, param=param, roots=roots)
        return ref

    def _stage(self, ref: str, param: str, roots: tuple[Path, ...]) -> str:
        """A local file the workers cannot read where it is: uploaded to storage (blocking)."""
        assert self.storage is not None
        path = Path(ref)
        try:
            confine(ref, roots, param)
            if self.storage.is_local():
                return ref  # inside the roots on a local store: every worker reads it as is
        except InvalidRequestError:
            pass  # outside the roots: upload it
        # The user's own file, read for them: a symlink to elsewhere is theirs to follow.
        real = Path(os.path.realpath(path))
        # Check before copying: no point storing a file the workers would refuse.
        inspect_audio(str(real), param=param, roots=(real.parent,))
        return stage_file(self.storage, real, param)

    async def enqueue(self, job: Mapping[str, Any] | AnyJob, *, defer_s: float = 0.0) -> Enqueued:
        """Validate and enqueue; a second enqueue of the same ``id`` is a no-op."""
        if not math.isfinite(defer_s) or abs(defer_s) > _MAX_DEFER_S:
            raise InvalidRequestError(
                f"defer_s must be a number of seconds within ±{_MAX_DEFER_S:,.0f} (a year)",
                param="defer_s",
            )
        checked = await self.validate(job)
        assert checked.id is not None
        fields = checked.model_dump(mode="json", exclude_none=True)
        with tracing.producer_span(fields, destination=wire.QUEUE_NAME) as span:
            if span.traceparent is not None:
                fields["traceparent"] = span.traceparent  # the worker's spans continue it
            try:
                created = await scripts.named("enqueue").run(
                    self.redis,
                    wire.enqueue_keys(checked.id),
                    [checked.id, wire.dumps(fields), int(defer_s * 1000)],
                )
            except ResponseError as exc:  # the script's own refusals
                message = str(exc).removeprefix("invalid_request_error: ")
                raise InvalidRequestError(message) from None
            span.created(bool(created))
        return Enqueued(job_id=checked.id, created=bool(created))

    async def status(self, job_id: str) -> StatusReport:
        return await job_status(self.redis, job_id)

    async def result(self, job_id: str) -> JobResult | None:
        return await read_result(self.redis, job_id)

    async def cancel(self, job_id: str) -> CancelAnswer:
        """Cancel one job (docs/cancel.md): ``cancelled``, ``already_finished`` (with its
        status) or ``not_found``; ``invalid`` for a malformed id."""
        return (await cancel_jobs(self.redis, [job_id], settings=self.settings))[0]

    async def cancel_many(self, job_ids: Iterable[str]) -> list[CancelAnswer]:
        """Cancel several jobs at once: one answer per distinct id, in order."""
        return await cancel_jobs(self.redis, job_ids, settings=self.settings)

    async def wait(
        self, job_id: str, *, timeout_s: float | None = None, fallback_s: float = FALLBACK_S
    ) -> JobResult:
        """The job's result once it is written; ``TimeoutError`` after ``timeout_s``.

        Woken by the finish path's message on the job's channel (see ``result_watch``),
        with a read of the record every ``fallback_s`` in case a message is missed. Where
        pub/sub is refused, the record is polled (every 20 ms, slowing to 0.5 s)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        poll_s = 0.02
        async with self._watch.watching(job_id) as woken:
            while True:
                if woken is not None:
                    woken.clear()  # before the read: a message after it wakes us again
                result = await read_result(self.redis, job_id)
                if result is not None:
                    return result
                pause = fallback_s if woken is not None else poll_s
                if deadline is not None:
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"job {job_id} has no result after {timeout_s:g} s")
                    pause = min(pause, max(0.0, deadline - time.monotonic()))
                if woken is None:
                    await asyncio.sleep(pause)
                    poll_s = min(poll_s * 1.5, 0.5)
                    continue
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns normally when
                # its task is cancelled just as the event fires, and the cancel (a Ctrl-C of
                # mimoq batch) was lost
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await woken.wait()

    async def aclose(self) -> None:
        """Release what this producer opened: the pub/sub connection of its waits, and the
        Redis client when it made it (``from_env``)."""
        await self._watch.aclose()
        if self._owns_redis:
            await self.redis.aclose()

    async def __aenter__(self) -> Producer:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()
