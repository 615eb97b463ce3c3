"""One job, one MiMo call: speech to a WAV/PCM file, transcription to a transcript file."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Literal

from obstore.exceptions import BaseError as ObjectStoreError

from mimoq.core import dialect_constants as dc
from mimoq.core import tracing, wire
from mimoq.core.dialect import speech_body, transcription_body
from mimoq.core.jobs import AudioOutput, Segment, SpeechJob, TextOutput, TranscriptionJob
from mimoq.core.settings import Settings
from mimoq.core.sources import AudioInput
from mimoq.core.storage import Storage
from mimoq.worker import metrics
from mimoq.worker.accounts.router import AccountRouter
from mimoq.worker.cancel_watch import RunningJobs
from mimoq.worker.job_inputs import input_info, spooled
from mimoq.worker.limiter import Limiter
from mimoq.worker.outputs import StorageUnavailableError, links, write_speech


@dataclass
class Outcome:
    """What a successful MiMo call produced, before it becomes a result record."""

    output: AudioOutput | TextOutput
    usage: dict[str, Any] | None
    text: str | None = None
    #: The account (name or key fingerprint, never a key) that served the call.
    account: str | None = None
    segments: list[Segment] | None = None
    #: MiMo calls this job made itself (0: a long job's, whose chunk jobs count their own)
    calls: int = 1
    #: seconds of audio sent to MiMo (transcription)
    audio_in_s: float | None = None


@dataclass
class WorkerDeps:
    """Everything a task needs, built once per worker process in ``on_startup``."""

    settings: Settings
    storage: Storage
    accounts: AccountRouter
    #: The attempts running in this process, for cancels (worker/cancel_watch.py).
    running: RunningJobs = field(default_factory=RunningJobs)

    @property
    def limiter(self) -> Limiter:
        """The first account's limiter (what start-up capacity checks look at)."""
        return self.accounts.primary.limiter

    @property
    def limiters(self) -> list[Limiter]:
        """Every account's limiter (a tenant held at its limit gives its tickets back to each)."""
        return [account.limiter for account in self.accounts.accounts.values()]


async def inspect_input(deps: WorkerDeps, ref: str, *, param: str) -> AudioInput:
    """Check a job's audio reference off the event loop (file checks block; a FIFO would hang).

    Remote inputs are probed (size and first bytes), not downloaded.
    """
    return await input_info(deps.settings, deps.storage, ref, param=param)


def output_key(job: SpeechJob | TranscriptionJob, job_id: str) -> str:
    """Deterministic, so a re-run of the same job overwrites the same object."""
    return job.output or f"{job.kind}/{job_id}{job.extension()}"


async def run_speech(deps: WorkerDeps, job: SpeechJob, job_id: str) -> Outcome:
    async with contextlib.AsyncExitStack() as inputs:
        clone = None
        if job.model == dc.VOICECLONE_MODEL and job.voice:
            sample = await inputs.enter_async_context(
                spooled(deps.settings, deps.storage, job.voice, param="voice")
            )
            clone = sample.for_request()
        body = speech_body(job, clone_sample=clone)
        key = output_key(job, job_id)
        usage: dict[str, Any] = {}
        fmt: Literal["wav", "pcm"] = "wav" if job.response_format == "wav" else "pcm"
        async with deps.accounts.call(
            job.model, job_id=job_id, audio_s=None, usage=usage, lane=job.priority,
            tenant=job.tenant,
        ) as call:  # fmt: skip
            # The MiMo call's span under the storage write's: the audio is written as it arrives.
            with tracing.storage_span("write", key, storage=deps.storage):
                async with call.client.speech(body) as audio:
                    info = await write_speech(deps.storage, key, fmt, audio)
            usage.update(audio.usage or {})
    output = AudioOutput(
        key=key,
        path=deps.storage.locate(key),
        **await links(deps.storage, deps.settings, key),
        format=fmt,
        bytes=info.bytes,
        duration_s=round(info.duration_s, 3),
        sample_rate=info.format.sample_rate,
        channels=info.format.channels,
        bits_per_sample=info.format.bits_per_sample,
    )
    metrics.audio_processed(job.kind, job.model, seconds=info.duration_s, size=info.bytes)
    return Outcome(output=output, usage=usage or None, account=call.account)


async def run_transcription(deps: WorkerDeps, job: TranscriptionJob, job_id: str) -> Outcome:
    async with spooled(deps.settings, deps.storage, job.file, param="file") as audio:
        body = transcription_body(job, audio.for_request())
        usage: dict[str, Any] = {}
        async with deps.accounts.call(
            job.model, job_id=job_id, audio_s=audio.duration_s, usage=usage,
            lane=job.priority, tenant=job.tenant,
        ) as call:  # fmt: skip
            text, call_usage = await call.client.transcribe(body)
            usage.update(call_usage or {})
    metrics.audio_processed(job.kind, job.model, seconds=audio.duration_s, size=audio.size)
    key = output_key(job, job_id)
    output = await write_transcript(deps, job, key, text)
    return Outcome(
        output=output, usage=usage or None, text=text, account=call.account,
        audio_in_s=audio.duration_s,
    )  # fmt: skip


async def write_transcript(
    deps: WorkerDeps, job: TranscriptionJob, key: str, text: str
) -> TextOutput:
    """The transcript as ``json`` (``{"text": …}``) or ``text``, stored under ``key``."""
    data = (wire.dumps({"text": text}) if job.response_format == "json" else text) + "\n"
    encoded = data.encode()
    try:
        with tracing.storage_span("write", key, storage=deps.storage):
            await deps.storage.put_bytes(key, encoded)
    except ObjectStoreError as exc:
        raise StorageUnavailableError(f"writing {key} failed ({type(exc).__name__})") from None
    text_fmt: Literal["json", "text"] = "json" if job.response_format == "json" else "text"
    return TextOutput(
        key=key,
        path=deps.storage.locate(key),
        **await links(deps.storage, deps.settings, key),
        format=text_fmt,
        bytes=len(encoded),
    )
