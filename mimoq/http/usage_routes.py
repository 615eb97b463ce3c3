"""``GET /v1/usage``: the caller's own tenant's usage and limits (docs/usage.md);
``?since=24h`` sets the span (90m, 24h, 7d, ...)."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mimoq.core.tenant_limits import DAY_S, parse_duration
from mimoq.core.usage_windows import usage_report
from mimoq.http.http_errors import HTTPError
from mimoq.http.routing import Context


async def usage(request: Request, ctx: Context, tenant: str) -> Response:
    since = request.query_params.get("since")
    try:
        since_s = parse_duration(since) if since else DAY_S
    except ValueError as exc:
        raise HTTPError(400, str(exc), param="since") from None
    report = await usage_report(
        ctx.front.producer.redis, ctx.settings.usage.limits(), since_s=since_s, now=time.time(),
        tenant=tenant, only_tenant=True,
    )  # fmt: skip
    return JSONResponse({"object": "usage", "tenant": tenant, **report})
