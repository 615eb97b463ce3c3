"""Running a planned batch: enqueue what is missing, follow every job to its result, journal
each finished item, and report; a quota-aware ETA on the way."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

from mimoq.core import run_events, runs, wire
from mimoq.core.errors import MimoqError
from mimoq.core.jobs import JobResult, JobStatus
from mimoq.core.results import job_status
from mimoq.core.splitting.chunks import UnsupportedAudioError
from mimoq.core.splitting.convert import convert_to_wav
from mimoq.core.splitting.plan import FanoutPlan, child_id
from mimoq.core.storage import Storage
from mimoq.producer.batch_plan import PlannedItem, legacy_job_id
from mimoq.producer.batch_state import FINISHED, ItemRecord, ItemStatus, RunFiles
from mimoq.producer.client import Producer

#: Results are looked up for at most this many jobs per Redis round trip.
_POLL_BATCH: Final = 500
#: Chunk results looked for at a time when a forgotten job's plan is gone.
_PROBE: Final = 32
#: Seconds between two reads of the run's ETA while a run is followed.
_ETA_EVERY_S: Final = 1.0


@dataclass(frozen=True)
class QuotaRate:
    """How fast one model's MiMo quota lets calls through (from the limiter's settings)."""

    requests_per_s: float
    tokens_per_s: float | None = None
    tokens_per_call: float = 0.0
    tokens_per_audio_s: float = 0.0

    def seconds_for(self, calls: int, audio_s: float) -> float:
        """The least time ``calls`` calls carrying ``audio_s`` seconds of audio can take."""
        seconds = calls / self.requests_per_s
        if self.tokens_per_s:
            tokens = calls * self.tokens_per_call + audio_s * self.tokens_per_audio_s
            seconds = max(seconds, tokens / self.tokens_per_s)
        return seconds


@dataclass(frozen=True)
class Progress:
    """A snapshot of a run, for progress bars and lines."""

    total: int
    succeeded: int
    failed: int
    in_progress: int
    queued: int
    pending: int
    resumed: int  #: finished in an earlier run of the same batch: not redone
    elapsed_s: float
    rate_per_s: float | None  #: items finished per second in this run
    eta_s: float | None

    @property
    def done(self) -> int:
        return self.succeeded + self.failed


def counts(records: Sequence[ItemRecord]) -> dict[ItemStatus, int]:
    """How many items are in each status (every status present, zeros included)."""
    out = dict.fromkeys(ItemStatus, 0)
    for record in records:
        out[record.status] += 1
    return out


def eta_s(
    remaining: Sequence[PlannedItem],
    quotas: Mapping[str, QuotaRate] | None,
    rate_per_s: float | None,
) -> float | None:
    """Seconds left: the slower of what the quota allows (models in parallel, each at its
    own rate) and what the run has achieved so far. None until either is known."""
    if not remaining:
        return 0.0
    estimates: list[float] = []
    if quotas:
        per_model: dict[str, tuple[int, float]] = {}
        for item in remaining:
            calls, audio = per_model.get(item.model, (0, 0.0))
            per_model[item.model] = (calls + item.calls, audio + item.audio_s)
        estimates += [quotas[m].seconds_for(c, a) for m, (c, a) in per_model.items() if m in quotas]
    if rate_per_s:
        estimates.append(len(remaining) / rate_per_s)
    return max(estimates) if estimates else None


async def forget(redis: Redis, job_id: str) -> None:
    """Drop a job's result records so that enqueueing its id runs it again (``--force``,
    or a failed item retried): the job's own, arq's, and those of its chunk jobs."""
    keys = [wire.result_key(job_id), wire.ARQ_RESULT_PREFIX + job_id, wire.fanout_key(job_id)]
    raw = await redis.get(wire.fanout_key(job_id))
    if raw is not None:
        plan = FanoutPlan.model_validate_json(raw)
        keys += [wire.result_key(c.job_id) for c in plan.children]
    else:  # the plan may have expired before its chunks' results: look for them by id
        start = 0
        while True:
            probe = [wire.result_key(child_id(job_id, i)) for i in range(start, start + _PROBE)]
            found = [k for k, n in zip(probe, await _exist_each(redis, probe), strict=True) if n]
            keys += found
            if not found:
                break
            start += _PROBE
    await redis.delete(*keys)


async def _exist_each(redis: Redis, keys: list[str]) -> list[int]:
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.exists(key)
        replies: list[int] = await pipe.execute()
    return replies


def _enqueue_error(exc: MimoqError | UnsupportedAudioError | OSError) -> tuple[str, str]:
    """(error type, message) of an item that could not be enqueued."""
    if isinstance(exc, MimoqError):
        return exc.error_type, exc.message
    if isinstance(exc, OSError):  # staging or converting its input: the disk, not the item
        return "internal_error", f"cannot prepare the input file: {exc.strerror or exc}"
    return "invalid_request_error", str(exc)


def _error_text(result: JobResult) -> str | None:
    if result.error is None:
        return None
    return f"{result.error.get('type', 'error')}: {result.error.get('message', '')}"


class BatchRunner:
    """Enqueues the items of a run that are not done yet and follows them to the end.

    Finished items are journaled as soon as they are seen, so a run that is killed and
    started again skips them even when Redis kept nothing (the embedded default).
    """

    def __init__(
        self,
        producer: Producer,
        files: RunFiles,
        items: Sequence[PlannedItem],
        *,
        force: bool = False,
        quotas: Mapping[str, QuotaRate] | None = None,
        poll_s: float = 0.25,
        enqueue_concurrency: int = 16,
        callback: dict[str, Any] | None = None,
        eta_source: Callable[[], Awaitable[float | None]] | None = None,
        stop_requested: Callable[[], bool] | None = None,
    ) -> None:
        self.producer = producer
        self.files = files
        #: Where the workers write outputs (MIMOQ_STORAGE_URL): items sharing a job get
        #: copies there, within the store; the run's own files stay in the data directory.
        self.storage: Storage = producer.storage or files.storage
        self.items = list(items)
        self.records = [ItemRecord(i.input, i.job_id) for i in self.items]
        self.force = force
        self.quotas = quotas
        self.poll_s = poll_s
        self._gate = asyncio.Semaphore(enqueue_concurrency)
        #: Every job of the run carries it, so Redis counts the run (mimoq.core.runs).
        self.run_id = files.run_id
        #: Where the run's ``batch.completed`` event goes (``--callback``), if anywhere.
        self.callback = callback
        #: The run's ETA read from Redis (the fleet's grant rate and the run's share of it,
        #: ``mimoq batch status``'s too); without one, the quota-only estimate below.
        self.eta_source = eta_source
        #: Whether the run was asked to stop (Ctrl-C), read on every poll besides the
        #: cancellation that asks the same: see mimoq/cli/ctrl_c.py for why both.
        self.stop_requested = stop_requested
        self._eta: float | None = None
        self._eta_read = -math.inf
        #: items refused before they became jobs: the run's record counts them as failed
        self._refused = 0
        self._started = time.monotonic()
        self._finished_here = 0
        self.resumed = 0

    def progress(self) -> Progress:
        tally = counts(self.records)
        elapsed = time.monotonic() - self._started
        rate = self._finished_here / elapsed if self._finished_here >= 3 and elapsed > 0 else None
        remaining = [
            i for i, r in zip(self.items, self.records, strict=True) if r.status not in FINISHED
        ]
        # the run's ETA from Redis while it has work left (it is read once a second)
        eta = self._eta if self.eta_source and remaining else eta_s(remaining, self.quotas, rate)
        return Progress(
            total=len(self.records), succeeded=tally[ItemStatus.succeeded],
            failed=tally[ItemStatus.failed], in_progress=tally[ItemStatus.in_progress],
            queued=tally[ItemStatus.queued],
            pending=tally[ItemStatus.pending], resumed=self.resumed, elapsed_s=elapsed,
            rate_per_s=rate,
            eta_s=eta,
        )  # fmt: skip

    async def run(self, on_progress: Callable[[Progress], None] | None = None) -> list[ItemRecord]:
        """Run to the end (or until cancelled); the reports are written either way."""
        try:
            self._resume()
            enqueue = asyncio.create_task(self._enqueue_all())
            try:
                await self._follow(enqueue, on_progress)
            finally:
                if not enqueue.done():
                    enqueue.cancel()
            await enqueue  # surfaces an unexpected enqueue error
        finally:
            self.files.write_reports(self.records)
        return self.records

    async def collect(self) -> list[ItemRecord]:
        """One last look at every job still open, journaling what finished, and the reports.

        For an interrupted run: answers that arrived after the last poll (while in-flight
        calls were finishing) are journaled too, so a re-run does not pay for them again.
        """
        try:
            # Items still marked pending too: an enqueue cut short by the interrupt may have
            # reached Redis before it could mark its item queued, and its job may have run.
            await self._poll(unsent_too=True)
        finally:
            self.files.write_reports(self.records)
        return self.records

    def duplicates(self) -> int:
        """Items that share their job with an earlier item (same content and parameters)."""
        return sum(len(group) - 1 for group in self._groups().values())

    def _groups(self) -> dict[str, list[int]]:
        """Item indices by job id, in plan order (items without a job left out)."""
        groups: dict[str, list[int]] = {}
        for index, item in enumerate(self.items):
            if item.job is not None:
                groups.setdefault(item.job_id, []).append(index)
        return groups

    def _usable(self, seen: ItemRecord | None) -> str | None:
        """The output key of a journaled success whose output is still there, else None."""
        if not (seen and seen.status == ItemStatus.succeeded and seen.output):
            return None
        key = self.storage.key_of(seen.output)
        return key if key is not None and self.storage.exists(key) else None

    def _resume(self) -> None:
        by_item = {} if self.force else self.files.journal_items()
        by_job = {} if self.force else self.files.journal()
        by_input = {name: seen for (name, _), seen in by_item.items()}  # the last one wins
        for item, record in zip(self.items, self.records, strict=True):
            if item.job is None:
                record.status, record.error = ItemStatus.failed, item.error
                self._refused += 1
                continue
            seen = by_item.get((record.input, record.job_id))
            if self._usable(seen):
                assert seen is not None
                record.status, record.output = ItemStatus.succeeded, seen.output
                self.resumed += 1
                continue
            # The same job finished for another item (the same recording under another
            # name, in this run or an earlier one): a copy of its output, no MiMo call.
            other = by_job.get(record.job_id) or self._legacy(item, by_input.get(record.input))
            if produced := self._usable(other):
                try:
                    record.output = self._deliver(item, produced)
                except OSError:
                    continue  # could not copy: the item runs as usual
                record.status = ItemStatus.succeeded
                self.resumed += 1
                self.files.append_journal([record])

    def _legacy(self, item: PlannedItem, seen: ItemRecord | None) -> ItemRecord | None:
        """``seen`` if it is this very recording with these parameters, journaled by a version
        that named outputs and ids differently (``a.json``, the output key in the id)."""
        key = self._usable(seen)
        if key is None or seen is None or item.job is None or item.content_sha256 is None:
            return None
        if seen.job_id != legacy_job_id(item.job, key, item.content_sha256):
            return None
        return seen

    async def _enqueue_all(self) -> None:
        async def one(indices: list[int]) -> None:
            async with self._gate:
                await self._enqueue(self.items[indices[0]], [self.records[i] for i in indices])

        pending = [
            [i for i in group if self.records[i].status == ItemStatus.pending]
            for group in self._groups().values()
        ]
        redis = self.producer.redis
        first = next((i.job for i in self.items if i.job is not None), None) or {}
        await runs.begin(
            redis,
            self.run_id,
            tenant=first.get("tenant"),
            priority=str(first.get("priority") or "interactive"),
            callback=self.callback,
        )
        await asyncio.gather(*(one(indices) for indices in pending if indices))
        await runs.count_refused(redis, self.run_id, self._refused)
        if await runs.seal(redis, self.run_id):  # nothing was left to run: it ended here
            await run_events.announce_end(redis, self.run_id)

    async def _enqueue(self, item: PlannedItem, records: list[ItemRecord]) -> None:
        """Enqueue ``item``'s job once for every item in ``records`` (they share its id)."""
        assert item.job is not None
        job_id = item.job_id
        redis = self.producer.redis
        try:
            if item.convert_from is not None:
                await asyncio.to_thread(self._convert, item)
            if self.force:
                await forget(redis, job_id)
            else:
                previous = await self.producer.result(job_id)
                if previous is not None and previous.status == "failed":
                    await forget(redis, job_id)  # a re-run retries what failed
            await self.producer.enqueue({**item.job, "run": self.run_id})
        except (MimoqError, UnsupportedAudioError, OSError) as exc:
            kind, message = _enqueue_error(exc)
            for record in records:
                record.status, record.error = ItemStatus.failed, f"{kind}: {message}"
            self._refused += 1  # one job refused (the run counts jobs)
            self.files.append_journal(records)
            return
        for record in records:
            record.status = ItemStatus.queued

    def _deliver(self, item: PlannedItem, produced: str) -> str:
        """Where the item's output is: the object at key ``produced`` itself, or a copy of it
        at the item's own key when the job was run under another item's name (blocking)."""
        own = item.job.get("output") if item.job else None
        if own and own != produced:
            self.storage.copy(produced, str(own))  # within the store: no local detour
            return self.storage.locate(str(own))
        return self.storage.locate(produced)

    def _convert(self, item: PlannedItem) -> None:
        assert item.job is not None and item.convert_from is not None
        target = Path(item.job["file"])
        if target.is_file() and not self.force:
            return  # content-addressed: an earlier run converted these very bytes
        key = target.relative_to(self.files.storage.root).as_posix()
        with self.files.storage.open_atomic(key) as f:
            convert_to_wav(item.convert_from, f)

    async def _follow(
        self, enqueue: asyncio.Task[None], on_progress: Callable[[Progress], None] | None
    ) -> None:
        while True:
            await self._poll()
            await self._read_eta()
            if on_progress is not None:
                on_progress(self.progress())
            if enqueue.done() and all(r.status in FINISHED for r in self.records):
                return
            if enqueue.done() and (enqueue.cancelled() or enqueue.exception() is not None):
                return  # nothing more will be enqueued: run() raises why, rather than wait
            await asyncio.sleep(self.poll_s)
            if self.stop_requested is not None and self.stop_requested():
                raise asyncio.CancelledError("stop requested")

    async def _read_eta(self) -> None:
        """Refresh the ETA from Redis, at most once a second (it reads the limiter's log)."""
        if self.eta_source is None or time.monotonic() - self._eta_read < _ETA_EVERY_S:
            return
        self._eta_read = time.monotonic()
        with contextlib.suppress(RedisError):  # keep the last one: a bar must not stop a run
            self._eta = await self.eta_source()

    async def _poll(self, *, unsent_too: bool = False) -> None:
        groups = self._groups()
        open_states = {ItemStatus.queued, ItemStatus.in_progress}
        if unsent_too:
            open_states.add(ItemStatus.pending)
        waiting = [
            job_id
            for job_id, indices in groups.items()
            if any(self.records[i].status in open_states for i in indices)
        ]
        redis = self.producer.redis
        finished: list[ItemRecord] = []
        for start in range(0, len(waiting), _POLL_BATCH):
            batch = waiting[start : start + _POLL_BATCH]
            async with redis.pipeline(transaction=False) as pipe:
                for job_id in batch:
                    pipe.get(wire.result_key(job_id))
                    pipe.exists(wire.in_progress_key(job_id))
                replies: list[Any] = await pipe.execute()
            for i, job_id in enumerate(batch):
                raw, running = replies[2 * i], replies[2 * i + 1]
                open_ones = [n for n in groups[job_id] if self.records[n].status not in FINISHED]
                if raw is None:
                    for n in open_ones:
                        if self.records[n].status == ItemStatus.pending and not running:
                            continue  # maybe never enqueued: nothing to say about it yet
                        self.records[n].status = (
                            ItemStatus.in_progress if running else ItemStatus.queued
                        )
                    continue
                result = JobResult.model_validate_json(raw)
                for n in open_ones:
                    finished.append(await self._finished(self.items[n], self.records[n], result))
        self._finished_here += len(finished)
        self.files.append_journal(finished)

    async def _finished(
        self, item: PlannedItem, record: ItemRecord, result: JobResult
    ) -> ItemRecord:
        record.status = ItemStatus(result.status)
        record.output = result.output.path if result.output else None
        record.error = _error_text(result)
        if record.status == ItemStatus.succeeded and result.output is not None:
            try:
                record.output = await asyncio.to_thread(self._deliver, item, result.output.key)
            except OSError as exc:
                record.status = ItemStatus.failed
                record.error = (
                    f"internal_error: cannot copy {record.output} (the output of the same "
                    f"recording under another name): {exc.strerror or exc}"
                )
        return record


async def run_status(files: RunFiles, redis: Redis | None) -> list[ItemRecord]:
    """Every item of a run as it stands now: the journal, then Redis for the rest."""
    records = files.read_items()
    by_item, by_job = files.journal_items(), files.journal()
    open_records: list[ItemRecord] = []
    for record in records:
        seen = by_item.get((record.input, record.job_id)) or by_job.get(record.job_id)
        if seen is not None and record.job_id:
            record.status, record.output, record.error = seen.status, seen.output, seen.error
        elif record.status not in FINISHED:
            open_records.append(record)
    if redis is not None:
        for record in open_records:
            report = await job_status(redis, record.job_id)
            if report.result is not None:
                record.output = report.result.output.path if report.result.output else None
                record.error = _error_text(report.result)
            record.status = _STATUS_OF_JOB[report.status]
    return records


#: A job's status (mimoq.core.results) as a batch item's: deferred jobs queued, unknown pending.
_STATUS_OF_JOB: Final = {
    JobStatus.queued: ItemStatus.queued,
    JobStatus.deferred: ItemStatus.queued,
    JobStatus.in_progress: ItemStatus.in_progress,
    JobStatus.succeeded: ItemStatus.succeeded,
    JobStatus.failed: ItemStatus.failed,
    JobStatus.cancelled: ItemStatus.cancelled,
    JobStatus.not_found: ItemStatus.pending,
}
