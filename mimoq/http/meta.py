"""The routes about the server itself: health, its OpenAPI document and docs page."""

from __future__ import annotations

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from mimoq.http import docs_html
from mimoq.http.routing import Context


async def healthz(request: Request) -> Response:
    """200 while Redis answers (the server is useless without it), else 503."""
    ctx: Context = request.app.state.ctx
    try:
        await ctx.front.producer.redis.ping()
    except (RedisError, OSError) as exc:
        return JSONResponse({"ok": False, "redis": type(exc).__name__}, status_code=503)
    return JSONResponse({"ok": True})


async def openapi_json(request: Request) -> Response:
    """The document the app was assembled with (``app.state.openapi``)."""
    return JSONResponse(request.app.state.openapi)


async def docs(request: Request) -> Response:
    return HTMLResponse(
        docs_html.openapi_page(request.app.state.openapi), headers=docs_html.headers()
    )
