"""mimoq: a Redis job queue for Xiaomi MiMo speech (TTS) and transcription (ASR).

The public Python API is what this package exports (``__all__``)::

    from mimoq import Producer, SpeechJob

    async with Producer.from_env() as producer:  # REDIS_URL and MIMOQ_* as the CLI reads them
        job = await producer.enqueue(SpeechJob(input="Hello.", voice="Mia"))
        result = await producer.wait(job.job_id)

Everything else (``mimoq.core``, ``mimoq.worker``, ...) is internal and may change.

The names are imported on first use: ``import mimoq`` stays instant, and importing any of
mimoq's own modules (which imports this package first) does not pull in the producer.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from mimoq.core.errors import ConfigurationError, InvalidRequestError, MimoqError
    from mimoq.core.jobs import JobResult, JobStatus, SpeechJob, TranscriptionJob
    from mimoq.core.results import StatusReport
    from mimoq.core.settings import Settings
    from mimoq.producer.cancel import CancelAnswer, CancelStatus
    from mimoq.producer.client import Enqueued, Producer

#: Each public name and the module that defines it.
_HOMES: Final = {
    "Producer": "mimoq.producer.client",
    "Enqueued": "mimoq.producer.client",
    "CancelAnswer": "mimoq.producer.cancel",
    "CancelStatus": "mimoq.producer.cancel",
    "Settings": "mimoq.core.settings",
    "SpeechJob": "mimoq.core.jobs",
    "TranscriptionJob": "mimoq.core.jobs",
    "JobResult": "mimoq.core.jobs",
    "JobStatus": "mimoq.core.jobs",
    "StatusReport": "mimoq.core.results",
    "MimoqError": "mimoq.core.errors",
    "InvalidRequestError": "mimoq.core.errors",
    "ConfigurationError": "mimoq.core.errors",
}

__all__ = [
    "CancelAnswer",
    "CancelStatus",
    "ConfigurationError",
    "Enqueued",
    "InvalidRequestError",
    "JobResult",
    "JobStatus",
    "MimoqError",
    "Producer",
    "Settings",
    "SpeechJob",
    "StatusReport",
    "TranscriptionJob",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'mimoq' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
