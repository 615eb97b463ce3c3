"""Every route of ``mimoq serve``, declared once: the app and ``/openapi.json`` read this table.

A route added here is served and described; a route served any other way fails
``tests/http/test_openapi_contract.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

from mimoq.http import (
    audio_routes,
    batches,
    dashboard,
    files,
    job_routes,
    meta,
    metrics_route,
    usage_routes,
)
from mimoq.http.contract import (
    Endpoint,
    Operation,
    answer,
    error,
    form_body,
    header,
    html,
    json_answer,
    json_body,
    linked,
    redirect,
)
from mimoq.http.routing import Handler, endpoint
from mimoq.http.schemas import Schema, ref

_ASYNC: Final = header(
    "Prefer",
    "respond-async: answer 202 at once with the job's location instead of waiting for it.",
)
_IDEMPOTENCY: Final = header(
    "Idempotency-Key",
    "1-255 printable ASCII characters: a repeat of the request finds the first one's job.",
    {"type": "string", "pattern": r"^[\x21-\x7e]{1,255}$"},
)
_BODY_ERRORS: Final = {
    "400": error("The request is not valid: the error names the field and the fix."),
    "408": error("The body arrived too slowly."),
    "413": error("The body is larger than the server's limit."),
}
_CANCELLED: Final = "The job was cancelled (code job_cancelled)."
_JOB_ERRORS: Final = {
    "409": error(_CANCELLED),
    "502": error("The job failed upstream (MiMo answered with an error)."),
    "503": error("The job failed: MiMo was unavailable or out of quota."),
    "504": error("The job is not finished within MIMOQ_HTTP_WAIT_TIMEOUT_S: poll its location.",
                 Location="The job to poll."),
}  # fmt: skip
_ACCEPTED: Final = linked(json_answer(
    "Prefer: respond-async: the job is queued.", "JobAccepted",
    Location="The job to poll.", Preference_Applied="respond-async",
), "job_id", "job", "job_content", "job_cancel")  # fmt: skip
_SINCE: Final = {
    "name": "since", "in": "query", "required": False,
    "description": "How far back: 90m, 24h (the default), 7d; summed from the hour windows "
    "(day windows past 7 days) that overlap it.",
    "schema": {"type": "string", "pattern": "^[1-9][0-9]{0,6}[smhd]$"},
}  # fmt: skip
_AUDIO: Final[dict[str, Schema]] = {"audio/wav": {}, "audio/pcm": {}}
_OUTPUT: Final = {
    **_AUDIO, "application/json": {}, "text/plain": {"type": "string"},
    "application/x-subrip": {"type": "string"}, "text/vtt": {"type": "string"},
    "application/octet-stream": {},
}  # fmt: skip
_TRANSCRIPT: Final = {
    "application/json": ref("Transcription"), "text/plain": {"type": "string"},
    "application/x-subrip": {"type": "string"}, "text/vtt": {"type": "string"},
}  # fmt: skip


def _api(
    method: Literal["GET", "POST"], path: str, name: str, handler: Handler, summary: str,
    responses: Mapping[str, Schema], *, tag: str, body: Schema | None = None,
    parameters: tuple[Schema, ...] = (),
) -> Operation:  # fmt: skip
    """An API operation: bearer auth, OpenAI's error shape, request metrics."""
    errors = {**(_BODY_ERRORS if body is not None else {}), "401": error(
        "No valid bearer token.", WWW_Authenticate="Bearer realm=\"mimoq\"",
    ), "500": error("An internal error (details are in the server's log).")}  # fmt: skip
    return Operation(
        method, path, name, summary, endpoint(name, handler), tag,
        {**responses, **{k: v for k, v in errors.items() if k not in responses}},
        bearer=True, body=body, parameters=parameters,
    )  # fmt: skip


def _page(
    method: Literal["GET", "POST"], path: str, name: str, run: Endpoint, summary: str,
    responses: Mapping[str, Schema], *, tag: str = "dashboard", body: Schema | None = None,
    bearer: bool = False,
) -> Operation:  # fmt: skip
    """A route outside the API's wrapper: dashboard pages carry their own session, and
    ``/metrics`` checks its own token (``bearer``)."""
    return Operation(method, path, name, summary, run, tag, responses, body=body, bearer=bearer)


_NOT_FOUND: Final = error("No such job (or another tenant's).")
_SESSION: Final = "the dashboard's session cookie, CSRF token and same origin"

OPERATIONS: Final[tuple[Operation, ...]] = (
    _api("POST", "/v1/audio/speech", "speech", audio_routes.speech, "Text to speech", {
        "200": answer("The audio (response_format).", _AUDIO), "202": _ACCEPTED, **_JOB_ERRORS,
    }, tag="audio", body=json_body("SpeechRequest"), parameters=(_ASYNC, _IDEMPOTENCY)),
    _api("POST", "/v1/audio/transcriptions", "transcriptions", audio_routes.transcriptions,
         "Speech to text", {
        "200": answer("The transcript (response_format).", _TRANSCRIPT), "202": _ACCEPTED,
        **_JOB_ERRORS, "409": error(f"That Idempotency-Key is another tenant's. {_CANCELLED}"),
    }, tag="audio", body=form_body("TranscriptionRequest"), parameters=(_ASYNC, _IDEMPOTENCY)),
    _api("GET", "/v1/jobs/{job_id}", "job", job_routes.job, "A job's state, or its result", {
        "200": json_answer("The job.", "Job"), "404": _NOT_FOUND,
    }, tag="jobs"),
    _api("GET", "/v1/jobs/{job_id}/content", "job_content", job_routes.content, "A job's output", {
        "200": answer("The output, in its format.", _OUTPUT), "404": _NOT_FOUND,
        "400": error("The job failed: its request was refused upstream."), **_JOB_ERRORS,
        "409": error(f"The job is not finished. {_CANCELLED}"),
    }, tag="jobs"),
    _api("POST", "/v1/jobs/{job_id}/cancel", "job_cancel", job_routes.cancel, "Cancel a job", {
        "200": json_answer("cancelled (now or before), or already_finished with its "
                           "job_status: the job is left as it is.", "JobCancel"),
        "404": _NOT_FOUND,
    }, tag="jobs"),
    _api("GET", "/v1/usage", "usage", usage_routes.usage,
         "The caller's tenant's usage and limits", {
        "200": json_answer("The usage.", "Usage"), "400": error("since is not a duration."),
    }, tag="usage", parameters=(_SINCE,)),
    _api("POST", "/v1/files", "files", files.create, "Upload a batch input file (JSONL)", {
        "200": linked(json_answer("The file.", "File"), "file_id", "file", "file_content"),
    }, tag="batches", body=form_body("FileUpload")),
    _api("GET", "/v1/files/{file_id}", "file", files.retrieve, "A file", {
        "200": json_answer("The file.", "File"), "404": error("No such file."),
    }, tag="batches"),
    _api("GET", "/v1/files/{file_id}/content", "file_content", files.content, "A file's bytes", {
        "200": answer("The JSONL.", {"application/jsonl": {"type": "string"}}),
        "404": error("No such file, or no longer stored."),
    }, tag="batches"),
    _api("POST", "/v1/batches", "batches", batches.create, "Start a batch", {
        "200": linked(json_answer("The batch (validating).", "Batch"), "batch_id", "batch",
                      "batch_cancel"),
        "404": error("No such input file."),
    }, tag="batches", body=json_body("BatchRequest")),
    _api("GET", "/v1/batches/{batch_id}", "batch", batches.retrieve, "A batch", {
        "200": json_answer("The batch.", "Batch"), "404": error("No such batch."),
    }, tag="batches"),
    _api("POST", "/v1/batches/{batch_id}/cancel", "batch_cancel", batches.cancel,
         "Cancel a batch", {
        "200": json_answer("The batch (cancelling or cancelled).", "Batch"),
        "404": error("No such batch."), "409": error("The batch is already finished."),
    }, tag="batches"),
    _page("GET", "/", "dashboard", dashboard.index, "The dashboard", {
        "200": html("The fleet."), "303": redirect("Not logged in: to /login."),
        "403": html("This tenant may not open the dashboard."),
        "503": error("This process has no fleet view."),
    }),
    _page("GET", "/login", "login_form", dashboard.login_form, "The login page", {
        "200": html("The form."),
    }),
    _page("POST", "/login", "login", dashboard.login, "Log in with an API token", {
        "303": redirect("Logged in: to the dashboard."), "401": html("Not a valid token."),
        **_BODY_ERRORS,
    }, body=form_body("LoginForm", "application/x-www-form-urlencoded")),
    _page("POST", "/logout", "logout", dashboard.logout, "Log out", {
        "303": redirect("To /login."), "403": html(f"Not from the dashboard ({_SESSION})."),
        **_BODY_ERRORS,
    }, body=form_body("DashboardForm", "application/x-www-form-urlencoded")),
    _page("POST", "/dashboard/replay", "replay", dashboard.replay, "Replay a dead letter", {
        "303": redirect("Replayed: back to the dashboard with the outcome."),
        "403": html(f"Not from the dashboard ({_SESSION})."),
        "503": error("This process has no fleet view."), **_BODY_ERRORS,
    }, body=form_body("DashboardForm", "application/x-www-form-urlencoded")),
    _page("POST", "/dashboard/cancel-run", "cancel_run", dashboard.cancel_run,
          "Cancel a run or batch", {
        "303": redirect("Cancelled: back to the dashboard with how many jobs."),
        "403": html(f"Not from the dashboard ({_SESSION})."), **_BODY_ERRORS,
    }, body=form_body("DashboardForm", "application/x-www-form-urlencoded")),
    _page("GET", "/healthz", "healthz", meta.healthz, "Health: Redis answers", {
        "200": json_answer("Redis answers.", "Health"),
        "503": json_answer("Redis does not answer.", "Health"),
    }, tag="service"),
    _page("GET", "/metrics", "metrics", metrics_route.metrics, "Prometheus metrics", {
        "200": answer("The exposition format.", {"text/plain": {"type": "string"}}),
        "401": error("Not MIMOQ_METRICS_TOKEN, nor a token of a tenant who may open the "
                     "dashboard.", WWW_Authenticate='Bearer realm="mimoq-metrics"'),
    }, tag="service", bearer=True),
    _page("GET", "/openapi.json", "openapi", meta.openapi_json, "This document", {
        "200": answer("OpenAPI 3.1.", {"application/json": {"type": "object"}}),
    }, tag="service"),
    _page("GET", "/docs", "docs", meta.docs, "This document as a page", {
        "200": html("The API reference."),
    }, tag="service"),
)  # fmt: skip
