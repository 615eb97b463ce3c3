"""``POST /v1/audio/speech`` and ``POST /v1/audio/transcriptions``, backed by the queue."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from mimoq.core import captions
from mimoq.core import dialect_constants as dc
from mimoq.core.errors import InvalidRequestError
from mimoq.core.jobs import JobResult
from mimoq.http.body import read_body
from mimoq.http.content import output_response, share_upload, upload_key, upload_path
from mimoq.http.frontdoor import new_job_id, refuse_server_fields, request_job_id
from mimoq.http.http_errors import HTTPError, job_failure
from mimoq.http.models import speech_model, transcription_model
from mimoq.http.multipart import SavedFile, receive_form
from mimoq.http.routing import Context


def wants_async(request: Request) -> bool:
    """RFC 7240 ``Prefer: respond-async`` (among other preferences, any case)."""
    for header in request.headers.getlist("prefer"):
        for pref in header.split(","):
            if pref.split(";")[0].split("=")[0].strip().lower() == "respond-async":
                return True
    return False


def accepted(job_id: str) -> JSONResponse:
    """202 for ``Prefer: respond-async``: where to poll for the job."""
    location = f"/v1/jobs/{job_id}"
    return JSONResponse(
        {"id": job_id, "object": "job", "status": "queued", "location": location},
        status_code=202,
        headers={"Location": location, "Preference-Applied": "respond-async"},
    )


async def _await(ctx: Context, job_id: str) -> JobResult:
    try:
        result = await ctx.front.wait(job_id)
    except TimeoutError:
        location = f"/v1/jobs/{job_id}"
        raise HTTPError(
            504,
            f"job {job_id} is not finished after {ctx.settings.http.wait_timeout_s:g} s; it goes "
            f"on: poll GET {location} (or send Prefer: respond-async)",
            type="timeout_error",
            code="job_pending",
            headers={"Location": location},
        ) from None
    if result.status != "succeeded":
        raise job_failure(result.error, job_id)
    return result


async def json_object(request: Request, ctx: Context) -> dict[str, Any]:
    raw = await read_body(request, ctx.json_limits, "MIMOQ_HTTP_MAX_JSON_BYTES")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise HTTPError(400, "the body is not valid JSON: send a JSON object") from None
    if not isinstance(body, dict):
        raise HTTPError(400, "the body must be a JSON object")
    return body


def speech_job(body: dict[str, Any], job_id: str) -> dict[str, Any]:
    """The queue job for an OpenAI speech body (the job model does the checking)."""
    refuse_server_fields(body)
    job = {**body, "kind": "speech", "id": job_id}
    if job.get("voice") == "":
        # The openai package requires a voice; "" is how its callers say "none" (voicedesign).
        del job["voice"]
    if "model" in body:
        job["model"] = speech_model(body["model"])
    voice = job.get("voice")
    # A path would make the server read its own files on a caller's behalf.
    if (
        job.get("model") == dc.VOICECLONE_MODEL
        and isinstance(voice, str)
        and not voice.startswith("data:")
    ):
        raise InvalidRequestError(
            f"voice for {dc.VOICECLONE_MODEL} must be sent inline over HTTP, as a "
            "data:audio/wav;base64,... (or audio/mpeg) URI",
            param="voice",
        )
    return job


async def speech(request: Request, ctx: Context, tenant: str) -> Response:
    body = await json_object(request, ctx)
    job_id = request_job_id(request.headers.get("idempotency-key"), tenant=tenant, route="speech")
    # With an Idempotency-Key, a repeat of a request finds the first one's job (a no-op
    # enqueue) and waits for, or answers with, that job.
    await ctx.front.submit(speech_job(body, job_id), tenant=tenant)
    if wants_async(request):
        return accepted(job_id)
    return await output_response(ctx.settings, ctx.storage, await _await(ctx, job_id))


# --- transcriptions ------------------------------------------------------------------------


#: Media types of the caption formats (``timestamps=segment`` only).
_CAPTION_TYPES: Final = {"srt": "application/x-subrip", "vtt": "text/vtt"}


def transcript_response(result: JobResult) -> Response:
    """A finished transcription as OpenAI answers it: text, JSON (with ``segments`` when
    asked for timestamps), or the SubRip/WebVTT file."""
    assert result.output is not None
    fmt = result.output.format
    if fmt in _CAPTION_TYPES:
        body = captions.render(result.text or "", result.segments, fmt)
        return Response(body, media_type=f"{_CAPTION_TYPES[fmt]}; charset=utf-8")
    if fmt == "text":
        return PlainTextResponse(result.text or "")
    answer: dict[str, Any] = {"text": result.text or ""}
    if result.segments is not None:
        answer["segments"] = [s.model_dump() for s in result.segments]
    return JSONResponse(answer)


def _audio_suffix(saved: SavedFile) -> str:
    """The upload's extension: its name's when it has one, else recognised from its bytes."""
    suffix = Path(saved.filename).suffix.lower()
    if suffix:
        return suffix if suffix.isascii() and suffix[1:].isalnum() and len(suffix) <= 8 else ".bin"
    if saved.head.startswith(b"RIFF") and saved.head[8:12] == b"WAVE":
        return ".wav"
    if saved.head.startswith(b"ID3") or (
        len(saved.head) > 1 and saved.head[0] == 0xFF and saved.head[1] & 0xE0 == 0xE0
    ):
        return ".mp3"
    return ".bin"


def _json_field(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise InvalidRequestError(
            f"{name} must be JSON in a form field (e.g. {name}={{...}})", param=name
        ) from None


def transcription_fields(fields: dict[str, list[str]]) -> dict[str, Any]:
    """Form fields as job fields: arrays as ``name[]``, JSON in callback and metadata."""
    job: dict[str, Any] = {}
    for raw_name, values in fields.items():
        if raw_name.endswith("[]"):
            job[raw_name[:-2]] = values
            continue
        value = values[-1]
        if raw_name in ("callback", "metadata"):
            job[raw_name] = _json_field(raw_name, value)
        elif raw_name == "file":
            raise InvalidRequestError(
                "file must be an uploaded file (multipart with a filename), not a text field",
                param="file",
            )
        else:
            job[raw_name] = value
    refuse_server_fields(job)
    if "model" in job:
        job["model"] = transcription_model(job["model"])
    if job.get("temperature") == "":
        del job["temperature"]
    return job


async def transcriptions(request: Request, ctx: Context, tenant: str) -> Response:
    job_id = request_job_id(
        request.headers.get("idempotency-key"), tenant=tenant, route="transcriptions"
    )
    # Unique per request: two requests with one Idempotency-Key never write one file.
    partial = upload_path(ctx.settings, upload_key(job_id, f".{new_job_id()}.part"))
    form = await receive_form(request, ctx.upload_limits, file_field="file", dest=partial)
    saved = form.file
    if saved is None or saved.size == 0:
        partial.unlink(missing_ok=True)
        raise InvalidRequestError("file is required: upload the audio (wav or mp3)", param="file")
    final = upload_path(ctx.settings, upload_key(job_id, _audio_suffix(saved)))
    if await ctx.front.exists(job_id):  # a repeat (Idempotency-Key): the first upload serves
        partial.unlink(missing_ok=True)
        if not await ctx.front.owned(job_id, tenant):
            raise HTTPError(409, "that Idempotency-Key is in use", code="idempotency_conflict")
        return accepted(job_id) if wants_async(request) else await _transcript(ctx, job_id)
    os.replace(partial, final)
    shared: str | None = None
    try:
        job = {**transcription_fields(form.fields), "kind": "transcription", "id": job_id}
        job["file"] = shared = await share_upload(ctx.storage, final, "file")
        await ctx.front.submit(job, tenant=tenant)
    except InvalidRequestError as exc:
        final.unlink(missing_ok=True)
        # The caller knows its upload by its name, not by where the server keeps it.
        name = f"the upload {saved.filename!r}"
        message = exc.message.replace(str(final), name)
        if shared is not None:
            message = message.replace(shared, name)
        raise InvalidRequestError(message, param=exc.param) from None
    except BaseException:
        final.unlink(missing_ok=True)
        raise
    if wants_async(request):
        return accepted(job_id)
    try:
        return await _transcript(ctx, job_id)
    finally:
        # A finished result is never recomputed: its input is no longer needed.
        if (await ctx.front.status(job_id)).result is not None:
            with contextlib.suppress(FileNotFoundError):
                final.unlink()


async def _transcript(ctx: Context, job_id: str) -> Response:
    """Wait for a transcription job and answer as OpenAI does: JSON ``{"text"}`` or text."""
    result = await _await(ctx, job_id)
    if result.kind == "transcription" and result.output is not None:
        return transcript_response(result)
    return await output_response(ctx.settings, ctx.storage, result)
