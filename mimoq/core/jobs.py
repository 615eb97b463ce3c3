"""Job, result and callback-payload models, with the OpenAI audio field names and rules.

Anyone who knows ``/v1/audio/speech`` and ``/v1/audio/transcriptions`` already knows these
jobs. Everything MiMo cannot do is refused with an ``invalid_request_error`` naming the
parameter, never dropped. Checks that need the filesystem live in ``mimoq.core.sources``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from mimoq.core import dialect_constants as dc
from mimoq.core.errors import InvalidRequestError
from mimoq.core.http_headers import header_problem
from mimoq.core.splitting.split_limits import MAX_LONG_AUDIO_B64_CHARS, MAX_LONG_SPEECH_CHARS
from mimoq.core.tracing import TRACEPARENT_FORM, valid_traceparent

#: Transcript formats that carry times: only with ``timestamps: "segment"``.
CAPTION_FORMATS = ("srt", "vtt")
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
#: Scheduling lanes (docs/scheduling.md): interactive jobs take the next free slot of their
#: model ahead of every bulk job; bulk keeps a minimum share of the quota.
LANES = ("interactive", "bulk")
#: Tenants share a lane fairly; the name becomes part of Redis keys and metric labels.
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MAX_METADATA_CHARS = 16_384
#: Where an audio input may live (see mimoq.core.inputs; kept here to avoid an import cycle).
_AUDIO_SCHEMES = frozenset({"file", "s3", "gs", "az", "memory", "http", "https"})
_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)(?P<params>(;[^;,]*)*?);base64,", re.I)


def _encodable(text: str) -> bool:
    # A lone surrogate (JSON "\\udc00" written raw) decodes fine but cannot be encoded back.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_run_name(run: str, *, param: str = "run") -> str:
    """The run name, if it may be one: it names Redis keys (``mimoq:run:<run>``), so it
    follows the job-id rule; otherwise an InvalidRequestError naming ``param``."""
    if not re.fullmatch(JOB_ID_PATTERN, run):
        raise InvalidRequestError(
            f"{param} must be 1-128 characters of A-Z a-z 0-9 . _ - (not starting with . _ -), "
            f"e.g. archive-2026-12; got {run[:130]!r}",
            param=param,
        )
    return run


def _refuse(message: str, param: str | None = None) -> PydanticCustomError:
    # ``param`` names the field for checks made at model level, where pydantic has no location.
    return PydanticCustomError(
        "invalid_request_error", message, {"param": param} if param else None
    )


class Callback(BaseModel):
    """Where to POST the result; ``headers`` are added to every delivery attempt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not re.match(r"^https?://[^/\s]+", url, re.I):
            raise _refuse("callback.url must be an absolute http:// or https:// URL")
        if not url.isprintable() or not _encodable(url):
            raise _refuse("callback.url may not hold control characters or invalid Unicode")
        return url

    @field_validator("headers")
    @classmethod
    def _no_reserved_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name in headers:
            lowered = name.lower()
            if lowered.startswith("webhook-") or lowered in {
                "content-type",
                "content-length",
                "host",
            }:
                raise _refuse(f"callback.headers may not set {name!r}: mimoq sets it")
            problem = header_problem(name, headers[name])
            if problem is not None:
                raise _refuse(problem)
        return headers


class _JobBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    id: Annotated[str, Field(pattern=JOB_ID_PATTERN)] | None = None
    output: str | None = None
    callback: Callback | None = None
    metadata: JsonValue = None
    priority: str = "interactive"
    tenant: str | None = None
    #: The run (a ``mimoq batch`` run, an HTTP batch) the job belongs to: its progress counts it.
    run: str | None = None

    @field_validator("run")
    @classmethod
    def _run(cls, run: str | None) -> str | None:
        try:
            return None if run is None else check_run_name(run)
        except InvalidRequestError as exc:  # pydantic reports only its own error types
            raise _refuse(exc.message, "run") from None

    #: W3C trace context of the producer's span: the worker's spans continue its trace.
    traceparent: str | None = None

    @field_validator("traceparent")
    @classmethod
    def _traceparent(cls, value: str | None) -> str | None:
        if value is not None and not valid_traceparent(value):
            raise _refuse(f"traceparent must be a W3C traceparent: {TRACEPARENT_FORM}")
        return value

    @field_validator("priority")
    @classmethod
    def _lane(cls, lane: str) -> str:
        if lane not in LANES:
            raise _refuse(
                f"priority {lane!r} is not a lane: use 'interactive' (the default: next free "
                "slot) or 'bulk' (archives and batches: waits behind interactive work)"
            )
        return lane

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, tenant: str | None) -> str | None:
        if tenant is not None and not re.fullmatch(TENANT_PATTERN, tenant):
            raise _refuse(
                "tenant must be 1-64 characters of A-Z a-z 0-9 . _ - (not starting with . _ -), "
                "e.g. 'team-a'"
            )
        return tenant

    @field_validator("model", mode="before", check_fields=False)
    @classmethod
    def _current_model(cls, model: object) -> object:
        # An older id MiMo routes to a V2.5 model becomes that model here, so the request,
        # the limiter's quota and the result all name the model that actually runs.
        return dc.MODEL_ALIASES.get(model, model) if isinstance(model, str) else model

    @field_validator("output")
    @classmethod
    def _relative_key(cls, key: str | None) -> str | None:
        if key is None:
            return key
        parts = key.split("/")
        if (
            not key
            or key.startswith("/")
            or "\\" in key
            or any(p in ("", ".", "..") for p in parts)
        ):
            raise _refuse(
                "output must be a relative path under the data directory, like 'books/ch1.wav' "
                "(no leading '/', no '..', no empty parts)"
            )
        return key

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, value: JsonValue) -> JsonValue:
        from mimoq.core.wire import dumps  # local: wire imports nothing from here, keep it that way

        text = dumps(value)
        if len(text) > MAX_METADATA_CHARS:
            raise _refuse(
                f"metadata must serialize to at most {MAX_METADATA_CHARS} characters of JSON"
            )
        if not _encodable(text):
            raise _refuse(
                "metadata holds text that is not valid Unicode (a lone surrogate such as "
                "\\udc00): send UTF-8 text, or base64 for binary data"
            )
        return value


class SpeechJob(_JobBase):
    """Text to speech, as ``/v1/audio/speech``."""

    kind: Literal["speech"] = "speech"
    input: str
    model: dc.SpeechModel = dc.TTS_MODEL
    voice: str | None = None
    instructions: str | None = None
    response_format: str = "wav"
    speed: float | None = None
    optimize_text_preview: bool | None = None
    thinking: dict[str, JsonValue] | None = None

    @field_validator("input")
    @classmethod
    def _input(cls, text: str) -> str:
        if not text.strip():
            raise _refuse("input must contain text to speak")
        if len(text) > MAX_LONG_SPEECH_CHARS:
            raise _refuse(
                f"input has {len(text):,} characters; mimoq splits texts of up to "
                f"{MAX_LONG_SPEECH_CHARS:,} at sentence boundaries (one MiMo call takes "
                f"{dc.MAX_SPEECH_CHARS:,}): send longer texts as several jobs (mimoq batch)"
            )
        return text

    @field_validator("response_format")
    @classmethod
    def _format(cls, fmt: str) -> str:
        if fmt not in ("wav", "pcm"):
            raise _refuse(
                f"response_format {fmt!r} is not supported: MiMo produces 'wav' or 'pcm' "
                "(24 kHz 16-bit mono); convert afterwards, e.g. with ffmpeg"
            )
        return fmt

    @field_validator("speed")
    @classmethod
    def _speed(cls, speed: float | None) -> float | None:
        if speed is not None and not math.isclose(speed, 1.0):
            raise _refuse(
                "speed must be absent or 1: MiMo has no numeric speed; "
                "use instructions to adjust pace, e.g. 'speak slowly'"
            )
        return speed

    @model_validator(mode="after")
    def _model_rules(self) -> SpeechJob:
        if self.model == dc.TTS_MODEL:
            if self.voice is not None and self.voice not in dc.PRESET_VOICES:
                raise _refuse(
                    f"voice {self.voice!r} is not a preset of {dc.TTS_MODEL}: use one of "
                    f"{', '.join(dc.PRESET_VOICES)} (or model {dc.VOICECLONE_MODEL} with a sample)",
                    "voice",
                )
            if self.optimize_text_preview is not None:
                raise _refuse(
                    f"optimize_text_preview applies to {dc.VOICEDESIGN_MODEL} only",
                    "optimize_text_preview",
                )
        elif self.model == dc.VOICEDESIGN_MODEL:
            if self.voice is not None:
                raise _refuse(
                    f"{dc.VOICEDESIGN_MODEL} takes no voice: describe the voice in instructions",
                    "voice",
                )
            if not (self.instructions or "").strip():
                raise _refuse(
                    f"instructions are required for {dc.VOICEDESIGN_MODEL}: "
                    "they are the voice description, e.g. 'a calm, low female voice'",
                    "instructions",
                )
        else:  # voiceclone
            if not self.voice:
                raise _refuse(
                    f"voice is required for {dc.VOICECLONE_MODEL}: a wav or mp3 sample as a "
                    "path, file:// URI or data:audio/wav;base64,... URI",
                    "voice",
                )
            check_audio_reference(self.voice, "voice")
            if self.optimize_text_preview is not None:
                raise _refuse(
                    f"optimize_text_preview applies to {dc.VOICEDESIGN_MODEL} only",
                    "optimize_text_preview",
                )
        return self

    def voice_for_request(self) -> str | None:
        """The ``audio.voice`` preset to send (clone samples are streamed separately)."""
        if self.model == dc.TTS_MODEL:
            return self.voice or dc.DEFAULT_VOICE
        return None

    def extension(self) -> str:
        return ".wav" if self.response_format == "wav" else ".pcm"


class TranscriptionJob(_JobBase):
    """Speech to text, as ``/v1/audio/transcriptions``."""

    kind: Literal["transcription"] = "transcription"
    file: str
    model: dc.TranscriptionModel = dc.ASR_MODEL
    language: str = "auto"
    response_format: str = "json"
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    prompt: str | None = None
    timestamp_granularities: list[str] | None = None
    # --- segments with timestamps, and less audio billed -----------------------------
    #: "segment": cut at pauses into utterances, each transcribed; the result has segments.
    timestamps: str | None = None
    #: Shorten pauses longer than MIMOQ_COMPACT_SILENCE_MIN_S before upload.
    compact_silence: bool = False

    @field_validator("timestamps")
    @classmethod
    def _timestamps(cls, value: str | None) -> str | None:
        if value is not None and value != "segment":
            raise _refuse(
                f"timestamps {value!r} is not supported: use 'segment' (times of each "
                "utterance, found by cutting the recording at pauses) or leave it out"
            )
        return value

    @model_validator(mode="after")
    def _captions_need_segments(self) -> TranscriptionJob:
        if self.response_format in CAPTION_FORMATS and self.timestamps != "segment":
            raise _refuse(
                f"response_format {self.response_format!r} needs timestamps: 'segment' "
                "(CLI --segments): MiMo returns plain text, and mimoq knows times only when "
                "it cuts the recording into segments itself",
                "response_format",
            )
        return self

    @field_validator("file")
    @classmethod
    def _file(cls, ref: str) -> str:
        check_audio_reference(ref, "file")
        return ref

    @field_validator("language")
    @classmethod
    def _language(cls, language: str) -> str:
        if language not in dc.ASR_LANGUAGES:
            raise _refuse(
                f"language {language!r} is not supported by {dc.ASR_MODEL}: use auto, zh or en"
            )
        return language

    @field_validator("response_format")
    @classmethod
    def _format(cls, fmt: str) -> str:
        if fmt not in ("json", "text", *CAPTION_FORMATS):
            raise _refuse(
                f"response_format {fmt!r} is not supported: use 'json' or 'text', or 'srt' "
                "or 'vtt' with timestamps: 'segment' (MiMo itself returns plain text only)"
            )
        return fmt

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, prompt: str | None) -> str | None:
        if prompt:
            raise _refuse("prompt is not supported by MiMo transcription: remove it")
        return prompt

    @field_validator("timestamp_granularities")
    @classmethod
    def _granularities(cls, value: list[str] | None) -> list[str] | None:
        if value:
            raise _refuse(
                "timestamp_granularities is not supported: MiMo returns no timestamps; remove "
                "it and set timestamps: 'segment' for the times of each utterance"
            )
        return value

    def extension(self) -> str:
        return ".txt" if self.response_format == "text" else f".{self.response_format}"


Job = Annotated[SpeechJob | TranscriptionJob, Field(discriminator="kind")]
_JOB_ADAPTER: TypeAdapter[SpeechJob | TranscriptionJob] = TypeAdapter(Job)


def check_audio_reference(ref: str, param: str) -> None:
    """Syntax checks of an audio reference (path, ``file://`` URI or base64 data URI).

    Raises the pydantic error type so that it reports like any other field error; the
    filesystem checks (exists, size, content) are in ``mimoq.core.sources``.
    """
    if ref.startswith("data:"):
        match = _DATA_URI.match(ref)
        if match is None:
            raise _refuse(
                f"{param} must be a base64 data URI like data:audio/wav;base64,...", param
            )
        mime = dc.MIME_ALIASES.get(match["mime"].lower())
        if mime is None:
            raise _refuse(
                f"{param}: audio type {match['mime']!r} is not supported by MiMo: use wav or mp3",
                param,
            )
        if param == "voice" and len(ref) > dc.MAX_AUDIO_B64_CHARS:
            raise _refuse(
                f"voice is {len(ref):,} characters of base64; a voice sample must fit one "
                f"MiMo call ({dc.MAX_AUDIO_B64_CHARS:,}): trim it (seconds of speech suffice)",
                param,
            )
        if len(ref) > MAX_LONG_AUDIO_B64_CHARS:
            raise _refuse(
                f"{param} is {len(ref):,} characters of base64; inline audio is split up to "
                f"{MAX_LONG_AUDIO_B64_CHARS:,} (MiMo takes {dc.MAX_AUDIO_B64_CHARS:,} per call): "
                "pass a longer recording as a file path instead",
                param,
            )
        return
    scheme = re.match(r"^([a-z][a-z0-9+.-]*)://", ref, re.I)
    if scheme and scheme.group(1).lower() not in _AUDIO_SCHEMES:
        raise _refuse(
            f"{param} must be a local path, a file://, s3://, gs://, az:// or https:// URL, "
            "or a data: URI",
            param,
        )
    name = (urlsplit(ref).path if scheme else ref).rsplit("/", 1)[-1]
    suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if suffix not in dc.EXTENSION_MIME:
        raise _refuse(
            f"{param}: {suffix or 'a file without extension'} is not supported by MiMo: "
            "use a .wav or .mp3 file (convert others, e.g. with ffmpeg)",
            param,
        )


def _format_errors(exc: ValidationError) -> InvalidRequestError:
    messages: list[str] = []
    params: list[str] = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"] if p not in ("speech", "transcription")]
        param = ".".join(loc)
        if err["type"] == "extra_forbidden":
            msg = f"{param} is not a supported parameter: remove it"
        elif err["type"] == "missing":
            msg = f"{param} is required"
        elif err["type"] == "union_tag_invalid" or err["type"] == "union_tag_not_found":
            param = "kind"
            msg = "kind must be 'speech' or 'transcription'"
        elif err["type"] == "literal_error" and loc[-1:] == ["model"]:
            allowed = err.get("ctx", {}).get("expected", "")
            msg = f"model {err['input']!r} is not supported here: use {allowed}"
        elif err["type"] == "string_pattern_mismatch" and loc == ["id"]:
            msg = "id must be 1-128 characters of A-Z a-z 0-9 . _ - (not starting with . _ -)"
        elif err["type"] == "invalid_request_error":
            param = str((err.get("ctx") or {}).get("param") or param)
            msg = err["msg"]
        else:
            msg = f"{param}: {err['msg']}" if param else err["msg"]
        messages.append(msg)
        params.append(param)
    first = params[0] if params else None
    return InvalidRequestError("; ".join(messages), param=first or None)


def parse_job(
    data: Mapping[str, Any] | SpeechJob | TranscriptionJob,
) -> SpeechJob | TranscriptionJob:
    """Validate a job from JSON data; every problem becomes one ``InvalidRequestError``."""
    if isinstance(data, SpeechJob | TranscriptionJob):
        return data
    if not isinstance(data, Mapping):
        raise InvalidRequestError("a job must be a JSON object", param=None)
    try:
        return _JOB_ADAPTER.validate_python(dict(data))
    except ValidationError as exc:
        raise _format_errors(exc) from None


def salvage_owner(raw: Any) -> tuple[str | None, str | None]:
    """The tenant and lane a job that failed validation names, each only if it is valid,
    for its failure (or cancelled) result record.

    The lane is what the enqueue script scheduled it in: a job naming none ran
    ``interactive``. Anything else (not a JSON object, a malformed name) is left out.
    """
    if not isinstance(raw, Mapping):
        return None, None
    tenant = raw.get("tenant")
    priority = raw.get("priority", LANES[0])
    return (
        tenant if isinstance(tenant, str) and re.fullmatch(TENANT_PATTERN, tenant) else None,
        priority if priority in LANES else None,
    )


# --- results ------------------------------------------------------------------------------


class JobStatus(StrEnum):
    queued = "queued"
    deferred = "deferred"
    in_progress = "in_progress"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    not_found = "not_found"


class CallbackStatus(StrEnum):
    none = "none"
    pending = "pending"
    delivered = "delivered"
    dead_lettered = "dead_lettered"


class AudioOutput(BaseModel):
    """A finished audio file in storage."""

    key: str
    path: str
    #: Its storage URL (``file:///…``, ``s3://bucket/key``); readable by ``mimoq fetch``.
    url: str | None = None
    #: An https URL that downloads it without credentials (``MIMOQ_PRESIGN_TTL_S``).
    presigned_url: str | None = None
    format: Literal["wav", "pcm"]
    bytes: int
    duration_s: float
    sample_rate: int
    channels: int
    bits_per_sample: int


class TextOutput(BaseModel):
    """A finished transcript file in storage."""

    key: str
    path: str
    url: str | None = None
    presigned_url: str | None = None
    format: Literal["json", "text", "srt", "vtt"]
    bytes: int


class Segment(BaseModel):
    """One utterance of a transcript, with where it is said in the original recording."""

    start: float  #: seconds from the start of the recording
    end: float
    text: str


class CallbackState(BaseModel):
    status: CallbackStatus = CallbackStatus.none
    delivery_id: str | None = None
    attempts: int = 0
    last_error: str | None = None


class JobResult(BaseModel):
    """The result record at ``mimoq:result:<id>``: JSON that any language can GET."""

    id: str
    kind: Literal["speech", "transcription"] | None
    status: Literal["succeeded", "failed", "cancelled"]
    model: str | None = None
    output: AudioOutput | TextOutput | None = None
    text: str | None = None
    segments: list[Segment] | None = None  #: with timestamps: "segment"
    usage: dict[str, JsonValue] | None = None
    error: dict[str, JsonValue] | None = None
    metadata: JsonValue = None
    tries: int = 1
    enqueued_at: float | None = None
    finished_at: float
    callback: CallbackState = Field(default_factory=CallbackState)
    #: The MiMo account that served the job: its configured name or its key's fingerprint.
    account: str | None = None
    #: Whose job it was and its lane, as the job named them (docs/scheduling.md).
    tenant: str | None = None
    priority: str | None = None
    #: The run the job belongs to (``mimoq batch``, an HTTP batch), if any.
    run: str | None = None


class CallbackPayload(BaseModel):
    """The JSON body POSTed to ``callback.url`` (signed when a webhook secret is set)."""

    type: Literal["job.succeeded", "job.failed", "job.cancelled"]
    delivery_id: str
    job_id: str
    kind: Literal["speech", "transcription"] | None
    status: Literal["succeeded", "failed", "cancelled"]
    model: str | None = None
    output: AudioOutput | TextOutput | None = None
    text: str | None = None
    segments: list[Segment] | None = None
    usage: dict[str, JsonValue] | None = None
    error: dict[str, JsonValue] | None = None
    metadata: JsonValue = None
    finished_at: float
    tenant: str | None = None
    priority: str | None = None
    run: str | None = None

    @classmethod
    def from_result(cls, result: JobResult, delivery_id: str) -> CallbackPayload:
        return cls(
            type=f"job.{result.status}",
            delivery_id=delivery_id,
            job_id=result.id,
            kind=result.kind,
            status=result.status,
            model=result.model,
            output=result.output,
            text=result.text,
            segments=result.segments,
            usage=result.usage,
            error=result.error,
            metadata=result.metadata,
            finished_at=result.finished_at,
            tenant=result.tenant,
            priority=result.priority,
            run=result.run,
        )
