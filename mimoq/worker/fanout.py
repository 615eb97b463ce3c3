"""Long inputs as a parent job of chunk jobs: split, enqueue the chunks, defer until they are
done, stitch their answers in order.

A job over one call's limit (a text past ``MAX_SPEECH_CHARS``, a recording past 10 MB of
base64) becomes a *parent*. Its first run splits the input (text at sentence boundaries;
audio into chunk files in storage, cut at quiet points) and enqueues one *child* job per
chunk through the same atomic enqueue script, with ids ``<parent>.p000``... Children are
ordinary jobs: any worker runs them, in parallel, under the fleet limiter, each with its
own retries. The parent then raises ``ChunksPending`` (a deferral, not a try) until
every child has a result, and stitches: transcripts joined in order, audio concatenated
sample-exactly into one file. It does not poll while it waits: the last child to finish
makes it due (``fanout_chunk_done.lua``), and it looks again after ``BACKSTOP_POLL_S``
only if nothing woke it. A child that gives up fails the parent, naming the chunk.
Every step is idempotent, so a parent run twice (at-least-once) redoes no MiMo call.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Literal

import pybase64
import structlog
from redis.asyncio import Redis

from mimoq.core import captions, scripts, tracing, wire
from mimoq.core import dialect_constants as dc
from mimoq.core.audio import AudioContainer, parse_wav_header
from mimoq.core.errors import ChunksPending, InternalError, InvalidRequestError, PermanentError
from mimoq.core.jobs import (
    AudioOutput,
    JobResult,
    Segment,
    SpeechJob,
    TextOutput,
    TranscriptionJob,
)
from mimoq.core.sources import AudioInput
from mimoq.core.splitting import pauses
from mimoq.core.splitting.chunks import AudioChunk, OpenChunk, UnsupportedAudioError
from mimoq.core.splitting.convert import convert_to_wav
from mimoq.core.splitting.join import join_wavs
from mimoq.core.splitting.mp3 import split_mp3
from mimoq.core.splitting.pauses import Compaction
from mimoq.core.splitting.pieces import window_energies, write_pieces
from mimoq.core.splitting.plan import (
    ChildSpec,
    FanoutPlan,
    child_id,
    chunk_key,
    chunk_metadata,
    chunks_prefix,
)
from mimoq.core.splitting.resample import SPLIT_FORMAT
from mimoq.core.splitting.split_limits import fits_one_call, max_chunk_bytes
from mimoq.core.splitting.text import join_transcripts, split_text
from mimoq.core.splitting.wavsplit import split_wav
from mimoq.worker.job_inputs import SplitSource, split_source
from mimoq.worker.limiter.admission import forget_admitted
from mimoq.worker.outputs import links
from mimoq.worker.pipeline import Outcome, WorkerDeps, inspect_input, output_key

log = structlog.get_logger("mimoq.fanout")
#: A parent waiting for its chunks is woken by the last one to finish
#: (``scripts/fanout_chunk_done.lua``); it looks again after this long even if no chunk
#: wakes it (a chunk finished outside the worker's result write: cancelled, expired).
BACKSTOP_POLL_S: Final = 30.0
#: A short look: the plan was lost and made again, or every chunk was counted between the
#: parent's read of their results and its wait.
MIN_POLL_S: Final = 0.5
_EXTENSIONS: Final = {"audio/wav": ".wav", "audio/mpeg": ".mp3"}
_TEXT_FORMATS: Final[dict[str, Literal["json", "text", "srt", "vtt"]]] = {
    "json": "json", "text": "text", "srt": "srt", "vtt": "vtt",
}  # fmt: skip
_WAV_HEADER: Final = 44


async def needs_fanout(deps: WorkerDeps, job: SpeechJob | TranscriptionJob) -> bool:
    """True when the job's input is more than one MiMo call takes, or is to be cut or
    converted before it is sent (segments, compacted silence, audio MiMo does not read)."""
    if isinstance(job, SpeechJob):
        return len(job.input) > dc.MAX_SPEECH_CHARS
    audio = await inspect_input(deps, job.file, param="file")
    return _prepared(job, audio) or not fits_one_call(audio.mime, audio.size)


def _prepared(job: TranscriptionJob, audio: AudioInput) -> bool:
    """True when the recording is decoded and cut by its pauses (``pauses``/``pieces``)
    rather than split as it is: segments, compacted silence, or an encoding to convert."""
    return job.timestamps == "segment" or job.compact_silence or audio.decode


async def run_parent(
    deps: WorkerDeps, redis: Redis, job: SpeechJob | TranscriptionJob, job_id: str
) -> Outcome:
    """One run of a parent: plan and enqueue on the first, then wait (deferring) and stitch."""
    key = wire.fanout_key(job_id)
    raw = await redis.get(key)
    if raw is None:
        await _leave_the_schedule(deps, redis, job, job_id)
        plan, children = await _split(deps, job, job_id)
        await _save_plan(redis, plan, ttl_s=deps.settings.storage.result_ttl_s)
        await _enqueue(redis, children)
        log.info("fanout.planned", job_id=job_id, chunks=len(children))
    else:
        plan = FanoutPlan.model_validate_json(raw)
    results = await _results(redis, plan)
    missing = [c for c, r in zip(plan.children, results, strict=True) if r is None]
    if missing:
        await _requeue_lost(redis, deps, job, plan, missing)
        raise await _wait_for_chunks(redis, plan, len(missing))
    done = [r for r in results if r is not None]
    failed = [(c, r) for c, r in zip(plan.children, done, strict=True) if r.status != "succeeded"]
    if failed:
        await _forget_failure(redis, deps, job_id, [c for c, _ in failed])
        spec, result = failed[0]
        error = result.error or {}
        more = f" (and {len(failed) - 1} more chunks)" if len(failed) > 1 else ""
        raise PermanentError(
            f"{spec.describe(len(plan.children))} failed{more}: "
            f"{error.get('type', 'error')}: {error.get('message', '')}"
        )
    outcome = await asyncio.to_thread(_stitch, deps, job, job_id, plan, done)
    accounts = {r.account for r in done}
    # Chunks stay on one account unless it paused mid-way; then the parent names none.
    outcome.account = accounts.pop() if len(accounts) == 1 else None
    outcome.output = outcome.output.model_copy(
        update=await links(deps.storage, deps.settings, outcome.output.key)
    )
    await _remove_chunks(deps, job_id)
    log.info("fanout.stitched", job_id=job_id, chunks=len(done))
    return outcome


# --- splitting ---------------------------------------------------------------------------


async def _split(
    deps: WorkerDeps, job: SpeechJob | TranscriptionJob, job_id: str
) -> tuple[FanoutPlan, list[dict[str, Any]]]:
    if isinstance(job, SpeechJob):
        specs, jobs = _split_text(job, job_id)
        return FanoutPlan(parent_id=job_id, kind="speech", children=specs), jobs
    try:
        info = await inspect_input(deps, job.file, param="file")
        async with split_source(
            deps.settings, deps.storage, job.file, param="file", need_path=_prepared(job, info)
        ) as source:
            chunks, extension = await asyncio.to_thread(_split_audio, deps, job, job_id, source)
    except UnsupportedAudioError as exc:
        raise InvalidRequestError(f"file: {exc}", param="file") from None
    specs = []
    jobs = []
    for chunk in chunks:
        spec = ChildSpec(
            index=chunk.index,
            job_id=child_id(job_id, chunk.index),
            start_s=chunk.start_s,
            end_s=chunk.end_s,
        )
        specs.append(spec)
        jobs.append(
            _transcription_child(deps, job, job_id, spec, chunk_key(job_id, chunk.index, extension))
        )
    return FanoutPlan(parent_id=job_id, kind="transcription", children=specs), jobs


def _split_text(job: SpeechJob, job_id: str) -> tuple[list[ChildSpec], list[dict[str, Any]]]:
    specs: list[ChildSpec] = []
    jobs: list[dict[str, Any]] = []
    start = 0
    for index, part in enumerate(split_text(job.input, dc.MAX_SPEECH_CHARS)):
        spec = ChildSpec(
            index=index,
            job_id=child_id(job_id, index),
            start_char=start,
            end_char=start + len(part),
        )
        start += len(part)
        fields = job.model_dump(
            mode="json", exclude_none=True, exclude={"id", "output", "callback", "metadata", "run"}
        )
        fields.update(
            id=spec.job_id, input=part.strip(), response_format="wav",
            output=chunk_key(job_id, index, ".wav"), metadata=chunk_metadata(job_id, index),
        )  # fmt: skip
        specs.append(spec)
        jobs.append(fields)
    return specs, jobs


def _transcription_child(
    deps: WorkerDeps, job: TranscriptionJob, job_id: str, spec: ChildSpec, key: str
) -> dict[str, Any]:
    # A chunk is sent as it is: the parent already cut it by pauses and compacted it.
    fields = job.model_dump(
        mode="json",
        exclude_none=True,
        exclude={"id", "output", "callback", "metadata", "run", "timestamps", "compact_silence"},
    )
    fields.update(
        id=spec.job_id, file=deps.storage.locate(key), response_format="text",
        output=chunk_key(job_id, spec.index, ".txt"), metadata=chunk_metadata(job_id, spec.index),
    )  # fmt: skip
    return fields


def _split_audio(
    deps: WorkerDeps, job: TranscriptionJob, job_id: str, source: SplitSource
) -> tuple[list[AudioChunk], str]:
    """Write the chunk files (in a thread: it reads the whole recording once)."""
    audio = source.audio
    prepared = _prepared(job, audio)
    extension = ".wav" if prepared else _EXTENSIONS[audio.mime]

    def open_chunk(index: int) -> Any:
        return deps.storage.open_atomic(chunk_key(job_id, index, extension))

    with contextlib.ExitStack() as stack:
        path = source.path
        if audio.data_uri is not None:  # a data URI past the limit: to a private file first
            spool = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mimoq-split-")))
            path = spool / f"source{_EXTENSIONS[audio.mime]}"
            path.write_bytes(pybase64.b64decode(audio.data_uri.partition(",")[2]))
        if prepared:
            assert path is not None  # split_source spools what must be decoded
            return _split_prepared(deps, job, path, open_chunk), extension
        max_bytes = max_chunk_bytes(audio.mime)
        if audio.mime == "audio/wav":
            # A local file, or an object in a store read in ranges (never whole).
            reader = open(path, "rb") if path is not None else source.opener()  # noqa: SIM115
            with reader as f:
                return split_wav(f, open_chunk, max_bytes=max_bytes), extension
        assert path is not None  # MP3s are split from a (possibly spooled) file
        return split_mp3(path, open_chunk, max_bytes=max_bytes), extension


@contextlib.contextmanager
def _local_parts(deps: WorkerDeps, keys: list[str]) -> Iterator[list[Path]]:
    """The chunk outputs as local files: in place when storage is local, else downloaded."""
    if deps.storage.is_local():
        yield [Path(deps.storage.locate(k)) for k in keys]
        return
    with tempfile.TemporaryDirectory(prefix="mimoq-join-") as spool:
        paths = []
        for n, key in enumerate(keys):
            path = Path(spool) / f"{n:05d}.wav"
            with deps.storage.open_read(key) as src, open(path, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            paths.append(path)
        yield paths


def _split_prepared(
    deps: WorkerDeps, job: TranscriptionJob, path: Path, open_chunk: OpenChunk
) -> list[AudioChunk]:
    """Decode to 16 kHz mono, find the pauses, and write the pieces ``pauses`` plans."""
    settings = deps.settings
    # The decoded copy is worker-private scratch (read twice, then spent): a local file,
    # whatever the storage.
    with tempfile.TemporaryDirectory(prefix="mimoq-decode-") as scratch:
        source = Path(scratch) / "decoded.wav"
        with open(source, "wb") as f:
            convert_to_wav(path, f)
        energies = window_energies(source)
        compact = None
        if job.compact_silence:
            compact = Compaction(
                settings.audio.compact_silence_min_s, settings.audio.compact_silence_keep_s
            )
        if job.timestamps == "segment":
            pieces = pauses.segments(
                energies, max_s=settings.audio.segment_max_s,
                min_pause_s=settings.audio.segment_min_pause_s, compact=compact,
            )  # fmt: skip
        else:
            limit_s = (max_chunk_bytes("audio/wav") - _WAV_HEADER) / SPLIT_FORMAT.byte_rate
            pieces = pauses.chunks(energies, max_s=limit_s, compact=compact)
        return write_pieces(source, pieces, open_chunk)


# --- children ----------------------------------------------------------------------------


async def _enqueue(redis: Redis, children: list[dict[str, Any]]) -> None:
    """Enqueue every chunk job (a no-op for any that already exists or has a result)."""
    script = scripts.named("enqueue")
    # Chunk attempts continue the trace under the attempt that planned them (tracing on).
    traceparent = tracing.current_traceparent() if tracing.is_on() else None
    for child in children:
        if traceparent is not None:
            child["traceparent"] = traceparent
        await script.run(redis, wire.enqueue_keys(child["id"]), [child["id"], wire.dumps(child), 0])


async def _leave_the_schedule(
    deps: WorkerDeps, redis: Redis, job: SpeechJob | TranscriptionJob, job_id: str
) -> None:
    """A parent makes no MiMo call of its own: it gives back what admission gave it for one,
    its place in the look-ahead and its reserved slot (a bulk job's), so that neither
    passes unused while its chunks run."""
    await forget_admitted(redis, job_id, {"model": job.model, "tenant": job.tenant}, None)
    for limiter in deps.limiters:
        await limiter.release_ticket(job.model, job_id)


async def _save_plan(redis: Redis, plan: FanoutPlan, *, ttl_s: int) -> None:
    """Store the plan, and its chunk count for the wake (before any chunk is enqueued, so
    every chunk finds it). A plan made again keeps the chunks already counted: they have
    their results and do not run again."""
    wake = wire.fanout_wake_key(plan.parent_id)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(wire.fanout_key(plan.parent_id), plan.model_dump_json(), ex=ttl_s)
        pipe.hset(wake, mapping={"total": len(plan.children)})
        pipe.expire(wake, ttl_s)
        await pipe.execute()


async def _wait_for_chunks(redis: Redis, plan: FanoutPlan, missing: int) -> ChunksPending:
    """The parent's wait: its queue place at the backstop, which its last chunk moves to
    now (``fanout_wait.lua``, atomic with the chunks' count)."""
    queued, wait_ms = await scripts.named("fanout_wait").run(
        redis,
        [wire.fanout_wake_key(plan.parent_id), wire.QUEUE_NAME],
        [plan.parent_id, int(BACKSTOP_POLL_S * 1000), int(MIN_POLL_S * 1000)],
    )
    return ChunksPending(
        f"{missing} of {len(plan.children)} chunks still running",
        retry_after_s=int(wait_ms) / 1000,
        queued=int(queued) == 1,
    )


async def _results(redis: Redis, plan: FanoutPlan) -> list[JobResult | None]:
    if not plan.children:  # a recording with no speech at all: nothing was sent
        return []
    raws = await redis.mget([wire.result_key(c.job_id) for c in plan.children])
    return [None if raw is None else JobResult.model_validate_json(raw) for raw in raws]


async def _requeue_lost(
    redis: Redis,
    deps: WorkerDeps,
    job: SpeechJob | TranscriptionJob,
    plan: FanoutPlan,
    missing: list[ChildSpec],
) -> None:
    """A chunk job with neither a result nor a queued job (lost to a crash between planning
    and enqueueing, or to a flushed Redis) is enqueued again."""
    async with redis.pipeline(transaction=False) as pipe:
        for spec in missing:
            pipe.exists(wire.job_key(spec.job_id))
        queued = await pipe.execute()
    lost = [spec for spec, exists in zip(missing, queued, strict=True) if not exists]
    if not lost:
        return
    await redis.delete(wire.fanout_key(plan.parent_id))  # re-plan: chunk files may be gone too
    log.warning("fanout.replanning", job_id=plan.parent_id, lost=len(lost))
    raise ChunksPending("chunk jobs were lost: planning again", retry_after_s=MIN_POLL_S)


async def _forget_failure(
    redis: Redis, deps: WorkerDeps, job_id: str, failed: list[ChildSpec]
) -> None:
    """After a chunk gives up, drop the plan and the failed chunks' results, so that running
    the parent again redoes exactly those chunks (the finished ones keep their results)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.delete(wire.fanout_key(job_id), *(wire.result_key(c.job_id) for c in failed))
        # they are counted again when they finish again
        pipe.hdel(wire.fanout_wake_key(job_id), *(c.job_id for c in failed))
        await pipe.execute()
    await _remove_chunks(deps, job_id)


async def _remove_chunks(deps: WorkerDeps, job_id: str) -> None:
    # Chunk files are re-creatable from the input: nothing of value is lost.
    await asyncio.to_thread(deps.storage.delete_prefix, chunks_prefix(job_id))


async def remove_cancelled_chunks(deps: WorkerDeps, redis: Redis, job_id: str) -> None:
    """A cancelled job that a worker records: if it was a parent (it has a plan), its chunk
    files go now, not at storage's own clean-up (docs/cancel.md). One EXISTS per cancelled
    job, so a job that never fanned out costs no storage listing."""
    if await redis.exists(wire.fanout_key(job_id)):
        await _remove_chunks(deps, job_id)


# --- stitching ---------------------------------------------------------------------------


def sum_usage(usages: list[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """Usage of all chunks added up, field by field (nested objects too); None if none had any."""
    total: dict[str, Any] = {}
    for usage in usages:
        for name, value in (usage or {}).items():
            if isinstance(value, bool):
                continue
            if isinstance(value, int | float):
                total[name] = total.get(name, 0) + value
            elif isinstance(value, Mapping):
                total[name] = sum_usage([total.get(name), value]) or {}
    return total or None


def segments_of(plan: FanoutPlan, results: list[JobResult]) -> list[Segment]:
    """Each piece's transcript with where its speech is in the original recording; pieces
    MiMo heard nothing in (a cough, noise) are left out."""
    out = []
    for spec, result in zip(plan.children, results, strict=True):
        text = (result.text or "").strip()
        if text and spec.start_s is not None and spec.end_s is not None:
            out.append(Segment(start=round(spec.start_s, 3), end=round(spec.end_s, 3), text=text))
    return out


def _stitch(
    deps: WorkerDeps,
    job: SpeechJob | TranscriptionJob,
    job_id: str,
    plan: FanoutPlan,
    results: list[JobResult],
) -> Outcome:
    usage = sum_usage([r.usage for r in results])
    key = output_key(job, job_id)
    if isinstance(job, TranscriptionJob):
        text = join_transcripts([r.text or "" for r in results])
        segments = segments_of(plan, results) if job.timestamps == "segment" else None
        data = captions.render(text, segments, job.response_format).encode()
        with deps.storage.open_atomic(key) as f:
            f.write(data)
        fmt: Literal["json", "text", "srt", "vtt"] = _TEXT_FORMATS[job.response_format]
        return Outcome(
            TextOutput(key=key, path=deps.storage.locate(key), format=fmt, bytes=len(data)),
            usage,
            text,
            segments=segments,
            calls=0,
        )
    parts = [r.output.key for r in results if r.output is not None]
    container: AudioContainer = "wav" if job.response_format == "wav" else "pcm"
    if len(parts) == len(results) and all(deps.storage.exists(p) for p in parts):
        with _local_parts(deps, parts) as paths, deps.storage.open_atomic(key) as f:
            info = join_wavs(paths, f, output=container)
        output = AudioOutput(
            key=key, path=deps.storage.locate(key), format=container, bytes=info.bytes,
            duration_s=round(info.duration_s, 3), sample_rate=info.format.sample_rate,
            channels=info.format.channels, bits_per_sample=info.format.bits_per_sample,
        )  # fmt: skip
        return Outcome(output, usage, calls=0)
    return Outcome(_existing_audio(deps, key, container, results), usage, calls=0)


def _existing_audio(
    deps: WorkerDeps, key: str, container: AudioContainer, results: list[JobResult]
) -> AudioOutput:
    """The parent's output from an earlier run that stitched it and died before recording
    its result (the chunk files are deleted only after the output is complete)."""
    first = results[0].output
    if not deps.storage.exists(key) or not isinstance(first, AudioOutput):
        raise InternalError(f"chunk audio of {key} is gone and the output was never written")
    size = deps.storage.size(key)
    data_bytes = size
    if container == "wav":
        with deps.storage.open_read(key) as f:
            parsed = parse_wav_header(f.read(1 << 16))
        if parsed is None or parsed[2] is None:
            raise InternalError(f"{key} is not a complete WAV")
        data_bytes = parsed[2]
    block = first.channels * first.bits_per_sample // 8
    duration = data_bytes / (first.sample_rate * block)
    return AudioOutput(
        key=key, path=deps.storage.locate(key), format=container, bytes=size,
        duration_s=round(duration, 3), sample_rate=first.sample_rate, channels=first.channels,
        bits_per_sample=first.bits_per_sample,
    )  # fmt: skip
