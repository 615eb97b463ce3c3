"""What one finished job adds to its tenant's usage (docs/usage.md).

Built where the job is known (the runner), written with its result (``runner.finish``).
"""

from __future__ import annotations

import time
from typing import Any

from mimoq.core import dialect_constants as dc
from mimoq.core import wire
from mimoq.core.dialect import usage_tokens
from mimoq.core.jobs import AudioOutput, SpeechJob, TranscriptionJob, salvage_owner
from mimoq.core.settings import Settings
from mimoq.core.usage_windows import UsageEntry, UsageWrite
from mimoq.worker import metrics
from mimoq.worker.pipeline import Outcome


def succeeded_usage(job: SpeechJob | TranscriptionJob, outcome: Outcome) -> UsageEntry:
    """A job that produced its output: its calls and what they carried. A long job's own
    record adds nothing but itself (``calls`` 0): its chunk jobs count their calls."""
    if outcome.calls == 0:
        return UsageEntry(job.tenant, job.model, {})
    audio_out = outcome.output.duration_s if isinstance(outcome.output, AudioOutput) else 0.0
    audio_in = outcome.audio_in_s or 0.0
    amounts = {
        "requests": float(outcome.calls),
        "audio_in_s": audio_in,
        "audio_out_s": audio_out,
        "audio_s": audio_in + audio_out,
        "chars": float(len(job.input)) if isinstance(job, SpeechJob) else 0.0,
        "tokens": float(usage_tokens(outcome.usage) or 0),
    }
    return UsageEntry(job.tenant, job.model, amounts)


def failed_usage(
    raw: Any, job: SpeechJob | TranscriptionJob | None, kind: str | None
) -> UsageEntry:
    """A job that ended failed: no call answered (a refused call is not billed)."""
    if job is not None:
        return UsageEntry(job.tenant, job.model, {"failed": 1.0})
    # a job that did not validate: only names that are valid become hash fields
    fields = raw if isinstance(raw, dict) else {}
    tenant, _lane = salvage_owner(fields)
    model = fields.get("model")
    if model not in dc.ALL_MODELS:
        kind = kind or fields.get("kind")
        model = dc.TTS_MODEL if kind == wire.TASK_SPEECH else dc.ASR_MODEL
    return UsageEntry(tenant, str(model), {"failed": 1.0})


def usage_write(entry: UsageEntry, settings: Settings) -> UsageWrite:
    """``entry`` for the result write's pipeline (every window kept: report and limits);
    counted in this process's metrics now. A tenant with limits has it added to its windows
    at once, as its gate reads them before each call; any other's goes by the journal."""
    metrics.usage_counted(entry.tenant, entry.model, entry.amounts)
    limits = settings.usage.limits()
    journal = not limits.for_tenant(entry.tenant)
    return UsageWrite(entry, limits.windows(), time.time(), journal=journal)
