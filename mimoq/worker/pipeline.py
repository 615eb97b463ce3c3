"""One job, one MiMo call: speech to a WAV/PCM file, transcription to a transcript file."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal

from mimoq.core import dialect_constants as dc
from mimoq.core import wire
from mimoq.core.audio import AudioFormatError, AudioSink
from mimoq.core.dialect import speech_body, transcription_body
from mimoq.core.errors import UpstreamResponseError
from mimoq.core.inputs import input_roots
from mimoq.core.jobs import AudioOutput, Segment, SpeechJob, TextOutput, TranscriptionJob
from mimoq.core.settings import Settings
from mimoq.core.sources import AudioInput, inspect_audio
from mimoq.core.storage import Storage
from mimoq.worker import metrics
from mimoq.worker.accounts.router import AccountRouter
from mimoq.worker.limiter import Limiter


@dataclass
class Outcome:
    """What a successful MiMo call produced, before it becomes a result record."""

    output: AudioOutput | TextOutput
    usage: dict[str, Any] | None
    text: str | None = None
    #: The account (name or key fingerprint, never a key) that served the call.
    account: str | None = None
    segments: list[Segment] | None = None


@dataclass
class WorkerDeps:
    """Everything a task needs, built once per worker process in ``on_startup``."""

    settings: Settings
    storage: Storage
    accounts: AccountRouter

    @property
    def limiter(self) -> Limiter:
        """The first account's limiter (what start-up capacity checks look at)."""
        return self.accounts.primary.limiter


async def inspect_input(deps: WorkerDeps, ref: str, *, param: str) -> AudioInput:
    """Check a job's audio reference off the event loop (file checks block; a FIFO would hang)."""
    return await asyncio.to_thread(
        inspect_audio, ref, param=param, roots=input_roots(deps.settings)
    )


def output_key(job: SpeechJob | TranscriptionJob, job_id: str) -> str:
    """Deterministic, so a re-run of the same job overwrites the same object."""
    return job.output or f"{job.kind}/{job_id}{job.extension()}"


async def run_speech(deps: WorkerDeps, job: SpeechJob, job_id: str) -> Outcome:
    clone = None
    if job.model == dc.VOICECLONE_MODEL and job.voice:
        clone = (await inspect_input(deps, job.voice, param="voice")).for_request()
    body = speech_body(job, clone_sample=clone)
    key = output_key(job, job_id)
    usage: dict[str, Any] = {}
    fmt: Literal["wav", "pcm"] = "wav" if job.response_format == "wav" else "pcm"
    async with deps.accounts.call(
        job.model, job_id=job_id, audio_s=None, usage=usage, lane=job.priority, tenant=job.tenant
    ) as call:
        try:
            with deps.storage.open_atomic(key) as f:
                sink = AudioSink(f, source="wav", output=fmt)
                usage.update(await call.client.speak(body, sink.write) or {})
                info = sink.finish()
        except AudioFormatError as exc:
            raise UpstreamResponseError(f"MiMo's audio is not a usable WAV: {exc}") from None
    output = AudioOutput(
        key=key,
        path=deps.storage.locate(key),
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
    audio = await inspect_input(deps, job.file, param="file")
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
    data = (wire.dumps({"text": text}) if job.response_format == "json" else text) + "\n"
    encoded = data.encode()
    with deps.storage.open_atomic(key) as f:
        f.write(encoded)
    text_fmt: Literal["json", "text"] = "json" if job.response_format == "json" else "text"
    output = TextOutput(key=key, path=deps.storage.locate(key), format=text_fmt, bytes=len(encoded))
    return Outcome(output=output, usage=usage or None, text=text, account=call.account)
