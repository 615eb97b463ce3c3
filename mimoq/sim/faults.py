"""Per-request faults: what the next matching request(s) get instead of a normal answer."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator


class FaultKind(StrEnum):
    STATUS = "status"  # an error status with a chosen body shape
    LATENCY = "latency"  # extra delay before a normal answer
    MALFORMED_BASE64 = "malformed_base64"  # 200 whose audio.data is not valid base64
    EMPTY_AUDIO = "empty_audio"  # 200 with audio.data "" / missing / null (ASR: content "")
    DISCONNECT = "disconnect"  # the connection drops part-way through the body
    AUDIO_BYTES = "audio_bytes"  # a normal answer carrying exactly this much audio


class ErrorBodyStyle(StrEnum):
    WRAPPED = "wrapped"  # {"error": {"code": "429", "message": ..., "type": ...}}
    UNWRAPPED = "unwrapped"  # {"type": "server_error", "message": ...}
    NOT_JSON = "not_json"  # an HTML error page, as a proxy in front of MiMo would send


class EmptyAudio(StrEnum):
    EMPTY = "empty"
    MISSING = "missing"
    NULL = "null"


#: Faults that only make sense for a TTS answer; ASR requests pass them by.
SPEECH_ONLY = frozenset({FaultKind.MALFORMED_BASE64, FaultKind.AUDIO_BYTES})
_COMMON = frozenset({"kind", "times", "match"})
_FIELDS = {
    FaultKind.STATUS: frozenset({"status", "retry_after", "body", "message"}),
    FaultKind.LATENCY: frozenset({"ms"}),
    FaultKind.MALFORMED_BASE64: frozenset(),
    FaultKind.EMPTY_AUDIO: frozenset({"data"}),
    FaultKind.DISCONNECT: frozenset({"after_bytes"}),
    FaultKind.AUDIO_BYTES: frozenset({"audio_bytes"}),
}
_REQUIRED = {FaultKind.LATENCY: "ms", FaultKind.AUDIO_BYTES: "audio_bytes"}


class Fault(BaseModel):
    """One fault, as posted to ``POST /_sim/faults`` (fields not of its kind are refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: FaultKind
    #: How many matching requests it applies to; None: every one until reset.
    times: int | None = Field(default=1, ge=1)
    #: Applies to requests whose raw JSON body contains this text (None: any request).
    match: str | None = None
    status: int = Field(default=500, ge=400, le=599)
    #: Sent verbatim as ``Retry-After`` (seconds or an HTTP date) when set.
    retry_after: str | None = None
    body: ErrorBodyStyle = ErrorBodyStyle.WRAPPED
    message: str | None = None
    ms: float = Field(default=0.0, ge=0)
    data: EmptyAudio = EmptyAudio.EMPTY
    #: Body bytes sent before the drop (None: half of the body).
    after_bytes: int | None = Field(default=None, ge=0)
    audio_bytes: int = Field(default=0, ge=0)

    @field_validator("retry_after", mode="before")
    @classmethod
    def _seconds_as_text(cls, value: object) -> object:
        # ``"retry_after": 2`` is what people type; the header is text either way.
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        return value

    @model_validator(mode="after")
    def _fields_of_kind(self) -> Fault:
        stray = self.model_fields_set - _COMMON - _FIELDS[self.kind]
        if stray:
            raise ValueError(f"{', '.join(sorted(stray))} do(es) not apply to kind {self.kind}")
        needed = _REQUIRED.get(self.kind)
        if needed and needed not in self.model_fields_set:
            raise ValueError(f"kind {self.kind} needs {needed}")
        return self

    def applies_to(self, body: bytes, *, speech: bool) -> bool:
        """Whether a request with this raw ``body`` (a TTS one if ``speech``) is affected."""
        if self.kind in SPEECH_ONLY and not speech:
            return False
        return self.match is None or self.match.encode("utf-8") in body


#: Parses one fault or a list of them from JSON (the control API, MIMOQ_SIM_FAULTS).
FAULTS_ADAPTER: TypeAdapter[list[Fault] | Fault] = TypeAdapter(list[Fault] | Fault)


def parse_faults(raw: str | bytes) -> tuple[Fault, ...]:
    """Faults from JSON text: one object or a list; raises pydantic's ``ValidationError``."""
    parsed = FAULTS_ADAPTER.validate_json(raw)
    return tuple(parsed) if isinstance(parsed, list) else (parsed,)


@dataclass
class _Pending:
    fault: Fault
    remaining: int | None


class FaultQueue:
    """Faults in the order they were added; each request takes the first one that matches.

    Not thread-safe by itself: ``SimState`` guards it.
    """

    def __init__(self) -> None:
        self._pending: list[_Pending] = []

    def add(self, faults: Iterable[Fault]) -> None:
        self._pending.extend(_Pending(f, f.times) for f in faults)

    def take(self, body: bytes, *, speech: bool) -> Fault | None:
        """The fault for a request with this raw ``body`` (used up after ``times`` uses)."""
        for i, pending in enumerate(self._pending):
            fault = pending.fault
            if not fault.applies_to(body, speech=speech):
                continue
            if pending.remaining is not None:
                pending.remaining -= 1
                if pending.remaining == 0:
                    del self._pending[i]
            return fault
        return None

    def clear(self) -> None:
        self._pending.clear()

    def describe(self) -> list[dict[str, Any]]:
        """The pending faults as JSON, with how many uses each has left."""
        return [
            {**p.fault.model_dump(mode="json", exclude_unset=True), "remaining": p.remaining}
            for p in self._pending
        ]
