"""The dashboard at ``/``: log in with an API token, see the fleet, replay dead letters.

The fleet's state and the replay come from the composition root (``FleetView``): reading
heartbeats and limiters, and re-enqueueing a callback, belong to the worker layer, which
this layer does not import.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs, urlencode

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from mimoq.core import wire
from mimoq.core.errors import InvalidRequestError
from mimoq.core.settings import Settings
from mimoq.http import batches, session_cookie
from mimoq.http import dashboard_html as html
from mimoq.http.auth import LOCAL_TENANT
from mimoq.http.body import BodyLimits, read_body
from mimoq.http.http_errors import HTTPError
from mimoq.http.routing import Context
from mimoq.producer.cancel import CancelStatus, cancel_jobs_of_run

log = structlog.get_logger("mimoq.http")

HISTORY_S: Final = 3600
_FORM_LIMITS: Final = BodyLimits(max_bytes=4096, idle_timeout_s=10, total_timeout_s=20)
_HEADERS: Final = {
    # Nothing but our own inline styles and forms posting to ourselves; never framed.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    # same-origin, not no-referrer: with no-referrer browsers send "Origin: null" on our own
    # form posts, which the origin check must refuse.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


@dataclass(frozen=True)
class FleetView:
    """What the dashboard reads and does, provided by ``mimoq.cli`` (which may import workers)."""

    #: ``mimoq inspect``'s report plus ``usage`` (the day's usage report, read once per load)
    snapshot: Callable[[Redis], Awaitable[dict[str, Any]]]
    limiters: Callable[[Redis], Awaitable[dict[str, Any]]]
    replay: Callable[[Redis, str], Awaitable[str]]
    #: refreshes the ``mimoq_desired_workers`` gauge (``/metrics`` calls it per scrape)
    desired_workers: Callable[[Redis], Awaitable[int]] | None = None
    #: A run's counts and ETA (``RunProgress.to_dict``), None if Redis has no record of it.
    progress: Callable[[Redis, str], Awaitable[dict[str, Any] | None]] | None = None
    #: Every run not ended yet, as ``progress`` gives each (the runs panel).
    runs: Callable[[Redis], Awaitable[list[dict[str, Any]]]] | None = None


def _page(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=_HEADERS)


def _key(ctx: Context) -> bytes:
    return session_cookie.signing_key(ctx.settings.http.token_list())


def _session_tenant(request: Request, ctx: Context) -> str | None:
    return session_cookie.verify(_key(ctx), request.cookies.get(session_cookie.COOKIE))


def may_open_dashboard(settings: Settings, tenant: str) -> bool:
    """MIMOQ_HTTP_DASHBOARD_TENANTS (empty: every tenant); ``/metrics`` asks it too."""
    allowed = {t.strip() for t in settings.http.dashboard_tenants.split(",") if t.strip()}
    return not allowed or tenant in allowed


def _set_cookie(response: Response, request: Request, value: str) -> None:
    response.set_cookie(
        session_cookie.COOKIE, value, max_age=session_cookie.LIFETIME_S, httponly=True,
        samesite="strict", secure=request.url.scheme == "https", path="/",
    )  # fmt: skip


async def _form(request: Request) -> dict[str, str]:
    raw = await read_body(request, _FORM_LIMITS, "the dashboard's form limit")
    fields = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[-1] for name, values in fields.items()}


def _same_origin(request: Request) -> bool:
    """Browsers send Origin on POSTs: one naming another site is a forged request."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


async def history(redis: Redis) -> dict[str, list[tuple[float, int]]]:
    """Each model's sampled requests per window over the last hour, oldest first."""
    out: dict[str, list[tuple[float, int]]] = {}
    cutoff = time.time() - HISTORY_S
    async for key in redis.scan_iter(match=wire.QUOTA_HISTORY_PREFIX + "*", count=100):
        name = key.decode() if isinstance(key, bytes) else str(key)
        fields = await redis.hgetall(name)  # type: ignore[misc]
        points = sorted(
            (float(ts), int(count)) for ts, count in fields.items() if float(ts) >= cutoff
        )
        if points:
            out[name.removeprefix(wire.QUOTA_HISTORY_PREFIX)] = points
    return out


async def sample_quota_forever(redis: Redis, fleet: FleetView, interval_s: float) -> None:
    """Record each model's requests in the limiter window ending now, every ``interval_s``."""
    while True:
        try:
            state = await fleet.limiters(redis)
            now = int(time.time())
            for snap in state.get("limiters", []) if state.get("enabled") else []:
                key = wire.QUOTA_HISTORY_PREFIX + str(snap["model"])
                old = [f for f in await redis.hkeys(key) if float(f) < now - HISTORY_S]  # type: ignore[misc]
                async with redis.pipeline(transaction=False) as pipe:
                    pipe.hset(key, str(now), str(int(snap.get("requests_recent") or 0)))
                    if old:
                        pipe.hdel(key, *old)
                    pipe.expire(key, 2 * HISTORY_S)
                    await pipe.execute()
        except (RedisError, OSError, KeyError, ValueError) as exc:
            log.warning("http.quota_sample_failed", error=type(exc).__name__)
        await asyncio.sleep(interval_s)


async def index(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    fleet: FleetView | None = request.app.state.fleet
    cookie = request.cookies.get(session_cookie.COOKIE)
    tenant = _session_tenant(request, ctx)
    fresh_cookie = None
    if tenant is None:
        if ctx.tokens.enabled:
            return RedirectResponse("/login", status_code=303)
        # No tokens: loopback only, nobody to log in; a session still anchors the CSRF token.
        tenant = LOCAL_TENANT
        cookie = fresh_cookie = session_cookie.issue(_key(ctx), tenant)
    assert cookie is not None
    if not may_open_dashboard(ctx.settings, tenant):
        return _page(html.login_page(f"tenant {tenant!r} may not open the dashboard"), 403)
    if fleet is None:
        raise HTTPError(503, "the dashboard has no fleet view in this process")
    redis = ctx.front.producer.redis
    # with ``usage``: each tenant's usage against its limits (docs/usage.md)
    snapshot = await fleet.snapshot(redis)
    notice = None
    if "replayed" in request.query_params:
        notice = (
            f"replay of {request.query_params['replayed']}: "
            f"{request.query_params.get('outcome', '')}"
        )
    if "cancelled" in request.query_params:
        notice = (
            f"cancel of run {request.query_params['cancelled']}: "
            f"{request.query_params.get('outcome', '')}"
        )
    runs = await fleet.runs(redis) if fleet.runs is not None else []
    body = html.page(
        snapshot, await history(redis), tenant=tenant,
        csrf=session_cookie.csrf_token(_key(ctx), cookie), notice=notice, runs=runs,
    )  # fmt: skip
    response = _page(body)
    if fresh_cookie is not None:
        _set_cookie(response, request, fresh_cookie)
    return response


async def login_form(request: Request) -> Response:
    return _page(html.login_page())


async def login(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    token = (await _form(request)).get("token", "")
    tenant = ctx.tokens.tenant_of(token) if ctx.tokens.enabled and token else None
    if tenant is None:
        return _page(html.login_page("that token is not valid"), 401)
    response = RedirectResponse("/", status_code=303)
    _set_cookie(response, request, session_cookie.issue(_key(ctx), tenant))
    return response


async def _checked_post(request: Request, ctx: Context) -> dict[str, str] | None:
    """The form of a POST from our own page: valid session, our CSRF token, our origin."""
    cookie = request.cookies.get(session_cookie.COOKIE)
    if _session_tenant(request, ctx) is None or cookie is None or not _same_origin(request):
        return None
    form = await _form(request)
    expected = session_cookie.csrf_token(_key(ctx), cookie)
    return form if hmac.compare_digest(form.get("csrf", ""), expected) else None


async def logout(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    if await _checked_post(request, ctx) is None:
        return _page(html.login_page("that request did not come from this dashboard"), 403)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(session_cookie.COOKIE, path="/")
    return response


async def replay(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    fleet: FleetView | None = request.app.state.fleet
    form = await _checked_post(request, ctx)
    tenant = _session_tenant(request, ctx)
    if form is None or tenant is None or not may_open_dashboard(ctx.settings, tenant):
        return _page(html.login_page("that request did not come from this dashboard"), 403)
    if fleet is None:
        raise HTTPError(503, "the dashboard has no fleet view in this process")
    delivery_id = form.get("delivery_id", "")
    outcome = await fleet.replay(ctx.front.producer.redis, delivery_id)
    log.info("http.dead_letter_replayed", delivery_id=delivery_id, outcome=outcome, tenant=tenant)
    query = urlencode({"replayed": delivery_id, "outcome": outcome})
    return RedirectResponse(f"/?{query}", status_code=303)


async def cancel_run(request: Request) -> Response:
    """The runs panel's cancel button: every unfinished job of the run is cancelled (its end
    is announced as ``batch.cancelled``); checked like replay (session, CSRF, origin)."""
    ctx: Context = request.app.state.ctx
    form = await _checked_post(request, ctx)
    tenant = _session_tenant(request, ctx)
    if form is None or tenant is None or not may_open_dashboard(ctx.settings, tenant):
        return _page(html.login_page("that request did not come from this dashboard"), 403)
    run = form.get("run", "")
    outcome = await _cancel_run_or_batch(ctx, run)
    log.info("http.run_cancelled", run=run, outcome=outcome, tenant=tenant)
    return RedirectResponse(f"/?{urlencode({'cancelled': run, 'outcome': outcome})}", 303)


async def _cancel_run_or_batch(ctx: Context, run: str) -> str:
    """An HTTP batch is cancelled as ``POST /v1/batches/{id}/cancel`` does (its record, not
    only its jobs: it must not stay ``in_progress``); any other run by its jobs."""
    try:
        if await batches.is_batch(ctx, run):
            done = await batches.cancel_batch(ctx, run)
            return "not found" if done is None else f"{done[1]} cancelled"
        answers = await cancel_jobs_of_run(ctx.front.producer.redis, run, settings=ctx.settings)
    except HTTPError as exc:  # the batch ended meanwhile
        return exc.message
    except InvalidRequestError:
        return "not a run name"
    return f"{sum(1 for a in answers if a.status is CancelStatus.cancelled)} cancelled"
