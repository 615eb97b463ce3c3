"""One wrapper for every API endpoint: authentication, the error shape, request metrics."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import structlog
from prometheus_client import Counter, Histogram
from starlette.requests import Request
from starlette.responses import Response

from mimoq.core import tracing
from mimoq.core.errors import InvalidRequestError
from mimoq.core.settings import Settings
from mimoq.core.storage import Storage
from mimoq.http.auth import LOCAL_TENANT, TokenTable, bearer_token
from mimoq.http.body import BodyLimits
from mimoq.http.frontdoor import FrontDoor
from mimoq.http.http_errors import HTTPError

log = structlog.get_logger("mimoq.http")

REQUESTS: Final = Counter(
    "mimoq_http_requests_total", "HTTP API requests by route and status", ["route", "status"]
)
DURATION: Final = Histogram(
    "mimoq_http_request_duration_seconds",
    "HTTP API request time, to the response head (synchronous jobs: their whole wait)",
    ["route"],
)


@dataclass
class Context:
    """What every handler needs, built once at start-up (``app.state.ctx``)."""

    settings: Settings
    tokens: TokenTable
    front: FrontDoor
    json_limits: BodyLimits
    upload_limits: BodyLimits
    storage: Storage


Handler = Callable[[Request, Context, str], Awaitable[Response]]


def authenticate(request: Request, tokens: TokenTable) -> str:
    """The caller's tenant; HTTPError 401 without a valid bearer token."""
    if not tokens.enabled:
        return LOCAL_TENANT
    token = bearer_token(request.headers.get("authorization"))
    tenant = tokens.tenant_of(token) if token is not None else None
    if tenant is None:
        raise HTTPError(
            401,
            "missing bearer token: send Authorization: Bearer <token>"
            if token is None
            else "incorrect API token provided",
            code="invalid_api_key",
            headers={"WWW-Authenticate": 'Bearer realm="mimoq"'},
        )
    return tenant


def endpoint(route: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint running ``handler(request, ctx, tenant)`` behind the checks."""

    async def run(request: Request) -> Response:
        ctx: Context = request.app.state.ctx
        started = time.monotonic()
        try:
            tenant = authenticate(request, ctx.tokens)
            # The caller's trace goes on through the jobs this request enqueues.
            with tracing.continued_from(request.headers.get("traceparent")):
                response = await handler(request, ctx, tenant)
        except HTTPError as exc:
            response = exc.response()
        except InvalidRequestError as exc:
            response = HTTPError.from_invalid(exc).response()
        except Exception:
            log.exception("http.internal_error", route=route)
            response = HTTPError(
                500, "internal error (details are in the server's log)", type="server_error"
            ).response()
        REQUESTS.labels(route, str(response.status_code)).inc()
        DURATION.labels(route).observe(time.monotonic() - started)
        return response

    return run
