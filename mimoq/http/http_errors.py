"""Every refusal in OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from typing import Any, Final

from starlette.responses import JSONResponse

from mimoq.core.errors import InvalidRequestError

#: How a failed job's error type reads over HTTP. The upstream's own 401/402 are the
#: service's problem, not the caller's: they become 502s, never the caller's 401.
_STATUS_OF_JOB_ERROR: Final = {
    "invalid_request_error": 400,
    "content_blocked_error": 400,
    "rate_limit_error": 503,
    "upstream_unavailable_error": 503,
    "cancelled": 409,  # someone withdrew it (docs/cancel.md): a conflict, not MiMo's failure
}
#: A failure's ``code``: ``job_failed`` unless the job did not fail but was withdrawn.
_CODE_OF_JOB_ERROR: Final = {"cancelled": "job_cancelled"}


class HTTPError(Exception):
    """A refusal to answer in OpenAI's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    @classmethod
    def from_invalid(cls, exc: InvalidRequestError, status: int = 400) -> HTTPError:
        """The producer's own ``invalid_request_error``, message and param unchanged."""
        return cls(status, exc.message, param=exc.param)

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def job_failure(error: dict[str, Any] | None, job_id: str) -> HTTPError:
    """A failed job's recorded error as the HTTP answer of the request that awaited it."""
    error = error or {}
    etype = str(error.get("type") or "job_failed")
    message = str(error.get("message") or "the job failed")
    param = error.get("param")
    return HTTPError(
        _STATUS_OF_JOB_ERROR.get(etype, 502),
        f"{message} (job {job_id})",
        type=etype,
        param=str(param) if param is not None else None,
        code=_CODE_OF_JOB_ERROR.get(etype, "job_failed"),
    )
