"""The JSON Schemas of ``mimoq serve``'s bodies (OpenAPI 3.1 components), written once.

The route table (``mimoq.http.routes``) refers to these by name; ``/openapi.json`` carries
them under ``components.schemas``. Field lists follow the job models in
``mimoq.core.jobs``: a field a handler accepts or answers with must be described here, and
the contract test fuzzes the live server against them.
"""

from __future__ import annotations

from typing import Any, Final, get_args

from mimoq.core import dialect_constants as dc
from mimoq.core.jobs import JOB_ID_PATTERN, LANES, JobStatus
from mimoq.core.openai_compat import SPEECH_ALIASES, TRANSCRIPTION_ALIASES
from mimoq.core.splitting.split_limits import MAX_LONG_SPEECH_CHARS
from mimoq.core.tenant_limits import USAGE_METRICS

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


_CALLBACK: Final[Schema] = {
    "type": "object",
    "description": "Where to POST the result when the job finishes (Standard Webhooks).",
    "required": ["url"],
    "properties": {
        "url": {"type": "string", "description": "An http(s) URL the server may reach."},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}

_METADATA: Final[Schema] = {
    "description": "Any JSON (up to 16 KiB serialized), returned with the result and callback."
}

SPEECH_REQUEST: Final[Schema] = {
    "type": "object",
    "description": "OpenAI's speech body, plus mimoq's callback and metadata.",
    "required": ["input"],
    "examples": [{"model": "tts-1", "input": "Hello there.", "voice": "Mia"}],
    "properties": {
        "input": {
            "type": "string",
            "pattern": r"\S",
            "maxLength": MAX_LONG_SPEECH_CHARS,
            "description": "The text to speak (split at sentences past one call's length).",
        },
        "model": {
            "type": "string",
            "description": "A MiMo speech model or an OpenAI alias of mimo-v2.5-tts.",
            "enum": [*get_args(dc.SpeechModel), *SPEECH_ALIASES],
        },
        "voice": {
            "type": "string",
            "description": "A preset voice (mimo-v2.5-tts), none or '' (voicedesign), or a "
            "data:audio/wav;base64,... sample (voiceclone).",
            "examples": list(dc.PRESET_VOICES),
        },
        "instructions": {"type": "string"},
        "response_format": {"type": "string", "enum": ["wav", "pcm"], "default": "wav"},
        "speed": {"const": 1, "description": "Absent or 1: MiMo has no numeric speed."},
        "optimize_text_preview": {"type": "boolean"},
        "thinking": {"type": "object"},
        "callback": _CALLBACK,
        "metadata": _METADATA,
    },
    "additionalProperties": False,
}

TRANSCRIPTION_REQUEST: Final[Schema] = {
    "type": "object",
    "description": "OpenAI's transcription form, plus mimoq's callback and metadata "
    "(JSON in a form field) and segment timestamps.",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "contentMediaType": "application/octet-stream",
                 "description": "The recording (wav, mp3, flac, ogg...)."},
        "model": {"type": "string", "enum": [dc.ASR_MODEL, *TRANSCRIPTION_ALIASES]},
        "language": {"type": "string", "default": "auto", "examples": ["auto", "zh", "en"]},
        "response_format": {"type": "string", "enum": ["json", "text", "srt", "vtt"]},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "prompt": {"type": "string"},
        "timestamps": {"type": "string", "enum": ["segment"]},
        "timestamp_granularities[]": {"type": "array", "items": {"type": "string"}},
        "compact_silence": {"type": "boolean"},
        "callback": {"type": "string", "description": "The callback object, as JSON."},
        "metadata": {"type": "string", "description": "Any JSON, as JSON text."},
    },
}  # fmt: skip

_SEGMENT: Final[Schema] = {
    "type": "object",
    "required": ["start", "end", "text"],
    "properties": {
        "start": {"type": "number"},
        "end": {"type": "number"},
        "text": {"type": "string"},
    },
}

TRANSCRIPTION: Final[Schema] = {
    "type": "object",
    "required": ["text"],
    "properties": {"text": {"type": "string"}, "segments": {"type": "array", "items": _SEGMENT}},
}

JOB_ACCEPTED: Final[Schema] = {
    "type": "object",
    "description": "Answer to Prefer: respond-async: poll the location for the job.",
    "required": ["id", "object", "status", "location"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "job"},
        "status": {"const": "queued"},
        "location": {"type": "string"},
    },
}

JOB_CANCEL: Final[Schema] = {
    "type": "object",
    "description": "What a cancel did (docs/cancel.md). cancelled: recorded as cancelled "
    "now (queued: never sent) or earlier; in_flight: its MiMo call had started and is closed "
    "within 2 s. already_finished: it ended otherwise and is left as it is.",
    "required": ["object", "id", "status"],
    "properties": {
        "object": {"const": "job.cancel"},
        "id": {"type": "string"},
        "status": {"type": "string", "enum": ["cancelled", "already_finished"]},
        "job_status": {"type": "string", "enum": ["succeeded", "failed"]},
        "in_flight": {"type": "boolean"},
    },
    "additionalProperties": False,
}

_OUTPUT: Final[Schema] = {
    "type": "object",
    "description": "The output, read at url (GET /v1/jobs/{id}/content).",
    "required": ["key", "format", "bytes", "url"],
    "properties": {
        "key": {"type": "string"},
        "url": {"type": "string"},
        "presigned_url": _nullable({"type": "string"}),
        "format": {"type": "string"},
        "bytes": {"type": "integer"},
        "duration_s": {"type": "number"},
        "sample_rate": {"type": "integer"},
        "channels": {"type": "integer"},
        "bits_per_sample": {"type": "integer"},
    },
}

JOB: Final[Schema] = {
    "type": "object",
    "description": "A job: its state while queued or running; its result record once finished.",
    "required": ["object", "id", "status"],
    "properties": {
        "object": {"const": "job"},
        "id": {"type": "string"},
        "status": {"type": "string", "enum": [s.value for s in JobStatus]},
        "run_at": {"type": "number", "description": "Deferred jobs: when they become due."},
        "waiting": {
            "type": "boolean",
            "description": "Waiting for admission or its tenant's limit.",
        },
        "reason": {
            "type": "string",
            "description": "Why it waits: its tenant is held at a "
            "MIMOQ_TENANT_LIMITS limit until the window frees.",
        },
        "kind": _nullable({"type": "string", "enum": ["speech", "transcription"]}),
        "model": _nullable({"type": "string"}),
        "output": _nullable(_OUTPUT),
        "text": _nullable({"type": "string"}),
        "segments": _nullable({"type": "array", "items": _SEGMENT}),
        "usage": _nullable({"type": "object"}),
        "error": _nullable({"type": "object"}),
        "metadata": _METADATA,
        "tries": {"type": "integer"},
        "enqueued_at": _nullable({"type": "number"}),
        "finished_at": {"type": "number"},
        "callback": {"type": "object"},
        "tenant": _nullable({"type": "string", "description": "Whose job it was."}),
        "priority": _nullable({"type": "string", "enum": list(LANES)}),
        "account": _nullable(
            {
                "type": "string",
                "description": "The MiMo account that served it: its configured name or "
                "its key's fingerprint.",
            }
        ),
        "run": _nullable(
            {
                "type": "string",
                "description": "The run it belongs to (mimoq batch, an HTTP batch), if any.",
            }
        ),
    },
}

FILE: Final[Schema] = {
    "type": "object",
    "required": ["id", "object", "bytes", "created_at", "filename", "purpose", "status"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "file"},
        "bytes": {"type": "integer"},
        "created_at": {"type": "integer"},
        "filename": {"type": "string"},
        "purpose": {"type": "string", "enum": ["batch", "batch_output"]},
        "status": {"type": "string"},
    },
}

FILE_UPLOAD: Final[Schema] = {
    "type": "object",
    "required": ["purpose", "file"],
    "properties": {
        "purpose": {"type": "string", "enum": ["batch"]},
        "file": {"type": "string", "contentMediaType": "application/octet-stream",
                 "description": "JSONL, one OpenAI batch request per line."},
    },
}  # fmt: skip

BATCH_REQUEST: Final[Schema] = {
    "type": "object",
    "required": ["endpoint", "input_file_id"],
    "properties": {
        "endpoint": {"type": "string", "enum": ["/v1/audio/speech", "/v1/audio/transcriptions"]},
        "input_file_id": {"type": "string"},
        "completion_window": {"type": "string", "enum": ["24h"]},
        "metadata": _nullable({"type": "object"}),
        "callback": {
            "type": "object", "required": ["url"],
            "description": "mimoq's: where to POST the batch's signed batch.completed (or "
                           "batch.cancelled) event when it ends.",
            "properties": {"url": {"type": "string"},
                           "headers": {"type": "object",
                                       "additionalProperties": {"type": "string"}}},
        },
    },
}  # fmt: skip

_TIME: Final[Schema] = _nullable({"type": "integer"})
_STATUSES: Final = [
    "validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling",
    "cancelled",
]  # fmt: skip

BATCH: Final[Schema] = {
    "type": "object",
    "required": ["id", "object", "endpoint", "input_file_id", "status", "created_at",
                 "request_counts"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "batch"},
        "endpoint": {"type": "string"},
        "errors": _nullable({"type": "object"}),
        "input_file_id": {"type": "string"},
        "completion_window": {"type": "string"},
        "status": {"type": "string", "enum": _STATUSES},
        "output_file_id": _nullable({"type": "string"}),
        "error_file_id": _nullable({"type": "string"}),
        "request_counts": {
            "type": "object",
            "required": ["total", "completed", "failed"],
            "properties": {k: {"type": "integer"} for k in ("total", "completed", "failed")},
        },
        "metadata": _nullable({"type": "object"}),
        **{f"{stage}_at": _TIME for stage in (
            "created", "in_progress", "expires", "finalizing", "completed", "failed", "expired",
            "cancelling", "cancelled", "expected_completion",
        )},
    },
}  # fmt: skip

ERROR: Final[Schema] = {
    "type": "object",
    "description": "OpenAI's error object.",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string", "examples": ["invalid_request_error"]},
                "param": _nullable({"type": "string"}),
                "code": _nullable({"type": "string"}),
            },
        }
    },
}

_AMOUNTS: Final[dict[str, Schema]] = {m: {"type": "number"} for m in USAGE_METRICS}
USAGE: Final[Schema] = {
    "type": "object",
    "description": "The caller's tenant's usage over the span, by model, and its use of its "
    "limits (MIMOQ_TENANT_LIMITS) in their current windows.",
    "required": ["object", "tenant", "since_s", "from", "until", "usage", "limits", "held"],
    "properties": {
        "object": {"const": "usage"},
        "tenant": {"type": "string"},
        "since_s": {"type": "number"},
        "from": {"type": "number", "description": "Start of the first hour (or day) counted."},
        "until": {"type": "number"},
        "usage": {"type": "array", "items": {
            "type": "object", "required": ["tenant", "model", *USAGE_METRICS],
            "properties": {"tenant": {"type": "string"}, "model": {"type": "string"}, **_AMOUNTS},
        }},
        "limits": {"type": "array", "items": {
            "type": "object",
            "required": ["tenant", "metric", "limit", "window", "window_s", "used", "frees_at",
                         "held"],
            "properties": {
                "tenant": {"type": "string"}, "metric": {"type": "string"},
                "limit": {"type": "number"}, "window": {"type": "string"},
                "window_s": {"type": "integer"}, "used": {"type": "number"},
                "frees_at": {"type": "integer"}, "held": {"type": "boolean"},
            },
        }},
        "held": {"type": "object", "description": "Held tenants -> when their window frees.",
                 "additionalProperties": {"type": "number"}},
    },
}  # fmt: skip

HEALTH: Final[Schema] = {
    "type": "object",
    "required": ["ok"],
    "properties": {"ok": {"type": "boolean"}, "redis": {"type": "string"}},
}

LOGIN_FORM: Final[Schema] = {
    "type": "object",
    "properties": {"token": {"type": "string", "description": "An API token."}},
}

DASHBOARD_FORM: Final[Schema] = {
    "type": "object",
    "properties": {
        "csrf": {"type": "string", "description": "The token the dashboard page carries."},
        "delivery_id": {"type": "string"},
        "run": {"type": "string", "description": "The run (or HTTP batch) to cancel."},
    },
}

#: Every schema by the name ``ref`` uses.
COMPONENTS: Final[dict[str, Schema]] = {
    "SpeechRequest": SPEECH_REQUEST,
    "TranscriptionRequest": TRANSCRIPTION_REQUEST,
    "Transcription": TRANSCRIPTION,
    "JobAccepted": JOB_ACCEPTED,
    "JobCancel": JOB_CANCEL,
    "Job": JOB,
    "File": FILE,
    "FileUpload": FILE_UPLOAD,
    "BatchRequest": BATCH_REQUEST,
    "Batch": BATCH,
    "Error": ERROR,
    "Health": HEALTH,
    "Usage": USAGE,
    "LoginForm": LOGIN_FORM,
    "DashboardForm": DASHBOARD_FORM,
}

#: Path parameters: ids are the server's own.
ID_SCHEMA: Final[Schema] = {"type": "string", "pattern": JOB_ID_PATTERN}
