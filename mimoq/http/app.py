"""The ASGI app of ``mimoq serve``, assembled from the route table: start-up and shutdown,
optional CORS, and one error shape for whatever no handler answered."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from importlib.metadata import PackageNotFoundError, version

from arq.connections import ArqRedis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mimoq.core.connections import connect
from mimoq.core.objstore import open_storage
from mimoq.core.settings import Settings
from mimoq.http import dashboard
from mimoq.http.auth import TokenTable
from mimoq.http.body import BodyLimits
from mimoq.http.content import UPLOADS_PREFIX, upload_path
from mimoq.http.contract import document
from mimoq.http.frontdoor import FrontDoor
from mimoq.http.http_errors import HTTPError
from mimoq.http.routes import OPERATIONS
from mimoq.http.routing import Context
from mimoq.http.sweeper import sweep_forever
from mimoq.producer.client import Producer


async def not_found(request: Request, _exc: Exception) -> Response:
    return HTTPError(404, f"no route {request.method} {request.url.path}").response()


async def method_not_allowed(request: Request, _exc: Exception) -> Response:
    return HTTPError(405, f"{request.method} is not allowed on {request.url.path}").response()


async def refused(_request: Request, exc: Exception) -> Response:
    """An ``HTTPError`` raised outside the API wrapper (the dashboard's pages and forms)."""
    assert isinstance(exc, HTTPError)
    return exc.response()


def mimoq_version() -> str:
    try:
        return version("mimoq")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def context(settings: Settings, tokens: TokenTable, redis: ArqRedis) -> Context:
    """What every handler needs, on this Redis."""
    body = settings.http
    return Context(
        settings=settings,
        tokens=tokens,
        front=FrontDoor(Producer(redis, settings), settings),
        json_limits=BodyLimits(body.max_json_bytes, body.body_idle_timeout_s, body.body_timeout_s),
        upload_limits=BodyLimits(
            body.max_upload_bytes, body.body_idle_timeout_s, body.body_timeout_s
        ),
        storage=open_storage(settings),
    )


def lifespan(
    settings: Settings, tokens: TokenTable, fleet: dashboard.FleetView | None
) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    """Redis is connected at start-up and closed at shutdown; background tasks live between."""

    @contextlib.asynccontextmanager
    async def run(app: Starlette) -> AsyncIterator[None]:
        redis = connect(settings)
        app.state.ctx = context(settings, tokens, redis)
        app.state.fleet = fleet
        app.state.background = set()  # request-started tasks (batch submissions)
        background = []
        if fleet is not None and settings.limiter.enabled:
            # Twice a window: each call is seen by a sample even when one runs late.
            every_s = max(0.5, settings.limiter.window_s / 2)
            background.append(
                asyncio.create_task(dashboard.sample_quota_forever(redis, fleet, every_s))
            )
        uploads = upload_path(settings, UPLOADS_PREFIX)
        stale_part_s = settings.http.body_timeout_s + 60
        background.append(
            asyncio.create_task(
                sweep_forever(
                    redis, uploads, interval_s=settings.http.upload_sweep_s,
                    stale_part_s=stale_part_s,
                )
            )
        )  # fmt: skip
        try:
            yield
        finally:
            for task in [*background, *app.state.background]:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await app.state.ctx.front.producer.aclose()
            await redis.aclose()

    return run


def cors(settings: Settings) -> list[Middleware]:
    """Browsers may call the API from these origins only; none by default."""
    origins = [o.strip() for o in settings.http.cors_origins.split(",") if o.strip()]
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            # traceparent/tracestate continue a browser's trace; Idempotency-Key makes a
            # retried POST safe. A header left out here fails the browser's preflight.
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Prefer",
                "Idempotency-Key",
                "traceparent",
                "tracestate",
            ],
            expose_headers=["Location", "Preference-Applied"],
        )
    ]


def build_app(
    settings: Settings, tokens: TokenTable, fleet: dashboard.FleetView | None = None
) -> Starlette:
    """The app of the route table. Without ``fleet`` (the composition root's view of workers
    and limiters) the dashboard answers 503."""
    app = Starlette(
        routes=[Route(op.path, op.endpoint, methods=[op.method]) for op in OPERATIONS],
        middleware=cors(settings),
        lifespan=lifespan(settings, tokens, fleet),
        exception_handlers={404: not_found, 405: method_not_allowed, HTTPError: refused},
    )
    app.state.openapi = document(OPERATIONS, version=mimoq_version())
    return app
