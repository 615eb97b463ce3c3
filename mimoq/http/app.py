"""The ASGI app of ``mimoq serve``: routes, start-up and shutdown, optional CORS."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mimoq.core.connections import connect
from mimoq.core.objstore import open_storage
from mimoq.core.settings import Settings
from mimoq.http import audio, batches, dashboard, files, jobs
from mimoq.http.auth import TokenTable
from mimoq.http.body import BodyLimits
from mimoq.http.content import UPLOADS_PREFIX, upload_path
from mimoq.http.errors import HTTPError
from mimoq.http.frontdoor import FrontDoor
from mimoq.http.metrics_route import metrics
from mimoq.http.routing import Context, endpoint
from mimoq.http.sweeper import sweep_forever
from mimoq.producer.client import Producer


async def healthz(request: Request) -> Response:
    """200 while Redis answers (the server is useless without it), else 503."""
    ctx: Context = request.app.state.ctx
    try:
        await ctx.front.producer.redis.ping()
    except (RedisError, OSError) as exc:
        return JSONResponse({"ok": False, "redis": type(exc).__name__}, status_code=503)
    return JSONResponse({"ok": True})


async def not_found(request: Request, _exc: Exception) -> Response:
    return HTTPError(404, f"no route {request.method} {request.url.path}").response()


async def method_not_allowed(request: Request, _exc: Exception) -> Response:
    return HTTPError(405, f"{request.method} is not allowed on {request.url.path}").response()


def build_app(
    settings: Settings, tokens: TokenTable, fleet: dashboard.FleetView | None = None
) -> Starlette:
    """The app; Redis is connected at start-up and closed at shutdown. Without ``fleet``
    (the composition root's view of workers and limiters) the dashboard answers 503."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        redis = connect(settings)
        app.state.ctx = Context(
            settings=settings,
            tokens=tokens,
            front=FrontDoor(Producer(redis, settings), settings),
            json_limits=BodyLimits(
                settings.http.max_json_bytes,
                settings.http.body_idle_timeout_s,
                settings.http.body_timeout_s,
            ),
            upload_limits=BodyLimits(
                settings.http.max_upload_bytes,
                settings.http.body_idle_timeout_s,
                settings.http.body_timeout_s,
            ),
            storage=open_storage(settings),
        )
        app.state.fleet = fleet
        app.state.background = set()  # request-started tasks (batch submissions)
        background = []
        if fleet is not None and settings.limiter.enabled:
            background.append(
                asyncio.create_task(
                    # Twice a window: each call is seen by a sample even when one runs late.
                    dashboard.sample_quota_forever(
                        redis, fleet, max(0.5, settings.limiter.window_s / 2)
                    )
                )
            )
        sweeper = asyncio.create_task(
            sweep_forever(
                redis,
                upload_path(settings, UPLOADS_PREFIX),
                interval_s=settings.http.upload_sweep_s,
                stale_part_s=settings.http.body_timeout_s + 60,
            )
        )
        background.append(sweeper)
        try:
            yield
        finally:
            for task in [*background, *app.state.background]:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await redis.aclose()

    routes = [
        Route("/v1/audio/speech", endpoint("speech", audio.speech), methods=["POST"]),
        Route(
            "/v1/audio/transcriptions",
            endpoint("transcriptions", audio.transcriptions),
            methods=["POST"],
        ),
        Route("/v1/jobs/{job_id}", endpoint("job", jobs.job), methods=["GET"]),
        Route("/v1/jobs/{job_id}/content", endpoint("job_content", jobs.content), methods=["GET"]),
        Route("/v1/files", endpoint("files", files.create), methods=["POST"]),
        Route("/v1/files/{file_id}", endpoint("file", files.retrieve), methods=["GET"]),
        Route(
            "/v1/files/{file_id}/content", endpoint("file_content", files.content), methods=["GET"]
        ),
        Route("/v1/batches", endpoint("batches", batches.create), methods=["POST"]),
        Route("/v1/batches/{batch_id}", endpoint("batch", batches.retrieve), methods=["GET"]),
        Route(
            "/v1/batches/{batch_id}/cancel",
            endpoint("batch_cancel", batches.cancel),
            methods=["POST"],
        ),
        Route("/", dashboard.index, methods=["GET"]),
        Route("/login", dashboard.login_form, methods=["GET"]),
        Route("/login", dashboard.login, methods=["POST"]),
        Route("/logout", dashboard.logout, methods=["POST"]),
        Route("/dashboard/replay", dashboard.replay, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    middleware = []
    origins = [o.strip() for o in settings.http.cors_origins.split(",") if o.strip()]
    if origins:  # browsers may call the API from these origins only; none by default
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "Prefer"],
                expose_headers=["Location", "Preference-Applied"],
            )
        )
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: method_not_allowed},
    )
