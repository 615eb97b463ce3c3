"""OpenAI Batch lines: one request per JSONL line in, one result line out (pure functions).

In: ``{"custom_id": "r1", "method": "POST", "url": "/v1/audio/speech", "body": {...}}``.
Out (output file): ``{"id", "custom_id", "response": {"status_code", "request_id", "body"},
"error": null}``; requests that failed go to the error file in the same shape with their
error as the body, and requests that never ran carry ``"response": null`` and an ``error``.
"""

from __future__ import annotations

import json
from typing import Any, Final

from mimoq.core.errors import InvalidRequestError
from mimoq.core.jobs import JobResult
from mimoq.core.openai_compat import SPEECH_URL, TRANSCRIPTIONS_URL
from mimoq.http.audio_routes import speech_job
from mimoq.http.content import MEDIA_TYPES
from mimoq.http.frontdoor import refuse_server_fields
from mimoq.http.http_errors import job_failure
from mimoq.http.models import transcription_model

ENDPOINTS: Final = (SPEECH_URL, TRANSCRIPTIONS_URL)
MAX_LINE_ERRORS: Final = 100


class LineError(ValueError):
    """A line that is not a batch request at all: the whole batch is refused (as OpenAI does)."""

    def __init__(self, line: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.message = message
        self.param = param

    def to_dict(self) -> dict[str, Any]:
        return {"code": "invalid_request", "message": self.message, "param": self.param,
                "line": self.line}  # fmt: skip


def parse_line(text: str, number: int, endpoint: str) -> tuple[str, dict[str, Any]]:
    """``(custom_id, body)`` of one line; ``LineError`` naming the line otherwise."""
    try:
        data = json.loads(text)
    except ValueError:
        raise LineError(number, f"line {number} is not valid JSON") from None
    if not isinstance(data, dict):
        raise LineError(number, f"line {number} must be a JSON object")
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise LineError(number, f"line {number}: custom_id must be a non-empty string", "custom_id")
    if data.get("method", "POST") != "POST":
        raise LineError(number, f"line {number}: method must be POST", "method")
    if data.get("url") != endpoint:
        raise LineError(
            number,
            f"line {number}: url {data.get('url')!r} differs from the batch's endpoint "
            f"{endpoint!r} (one endpoint per batch)",
            "url",
        )
    body = data.get("body")
    if not isinstance(body, dict):
        raise LineError(number, f"line {number}: body must be a JSON object", "body")
    return custom_id, body


def job_of(endpoint: str, body: dict[str, Any], job_id: str) -> dict[str, Any]:
    """The queue job for one request body; ``InvalidRequestError`` for what HTTP refuses."""
    if endpoint == SPEECH_URL:
        return speech_job(body, job_id)
    refuse_server_fields(body)
    audio = body.get("file")
    if not isinstance(audio, str) or not audio.lower().startswith(("data:", "http://", "https://")):
        # A path would make the server read its own files for the caller.
        raise InvalidRequestError(
            "file must be an http(s):// URL of the audio, or the audio inline as a "
            "data:audio/wav;base64,... (or audio/mpeg) URI",
            param="file",
        )
    job = {**body, "kind": "transcription", "id": job_id}
    if "model" in body:
        job["model"] = transcription_model(body["model"])
    return job


def _line(custom_id: str, job_id: str | None, response: Any, error: Any) -> dict[str, Any]:
    return {
        "id": f"batch_req_{job_id or custom_id}",
        "custom_id": custom_id,
        "response": response,
        "error": error,
    }


def success_line(custom_id: str, result: JobResult, url: str | None = None) -> dict[str, Any]:
    """A finished request: audio by URL (by default the front door's), a transcript inline."""
    body: dict[str, Any]
    if result.kind == "transcription":
        body = {"text": result.text or ""}
    else:
        output = result.output
        body = {"id": result.id, "url": url or f"/v1/jobs/{result.id}/content"}
        if output is not None:
            body.update(content_type=MEDIA_TYPES.get(output.format), bytes=output.bytes)
            body["duration_s"] = getattr(output, "duration_s", None)
    response = {"status_code": 200, "request_id": result.id, "body": body}
    return _line(custom_id, result.id, response, None)


def failure_line(custom_id: str, result: JobResult) -> dict[str, Any]:
    error = job_failure(result.error, result.id)
    response = {"status_code": error.status, "request_id": result.id, "body": error.body()}
    return _line(custom_id, result.id, response, None)


def refused_line(custom_id: str, job_id: str, error: dict[str, Any]) -> dict[str, Any]:
    body = {"error": {"message": error.get("message"), "type": "invalid_request_error",
                      "param": error.get("param"), "code": None}}  # fmt: skip
    return _line(custom_id, job_id, {"status_code": 400, "request_id": job_id, "body": body}, None)


def not_run_line(custom_id: str, job_id: str, code: str, message: str) -> dict[str, Any]:
    return _line(custom_id, job_id, None, {"code": code, "message": message})
