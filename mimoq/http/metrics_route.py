"""``/metrics`` of ``mimoq serve``: Prometheus exposition behind a bearer token.

The metrics show the whole fleet (every tenant's label, the queue, the quota), so they take
the same care as the dashboard: the caller presents ``MIMOQ_METRICS_TOKEN`` when it is set
(a scraper's own token, which cannot enqueue anything), else a token of a tenant who may
open the dashboard. With no token configured at all, serve listens on loopback only and the
endpoint is open to this host, like the rest of the API.

Each scrape refreshes ``mimoq_desired_workers`` first, so a fleet scaled to zero workers
still has a process that reports the autoscaling signal.
"""

from __future__ import annotations

import hashlib
import hmac

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from mimoq.core.errors import ConfigurationError
from mimoq.core.settings import Settings
from mimoq.http.auth import MIN_TOKEN_CHARS, TokenTable, bearer_token
from mimoq.http.dashboard import may_open_dashboard
from mimoq.http.http_errors import HTTPError
from mimoq.http.routing import Context

log = structlog.get_logger("mimoq.http")


def check_metrics_token(settings: Settings) -> None:
    """At start-up: a metrics token too short to resist guessing stops serve."""
    token = settings.http.metrics_token
    if token is not None and len(token.get_secret_value().strip()) < MIN_TOKEN_CHARS:
        raise ConfigurationError(
            f"MIMOQ_METRICS_TOKEN needs at least {MIN_TOKEN_CHARS} characters "
            "(e.g. `openssl rand -hex 24`)"
        )


def may_scrape(settings: Settings, tokens: TokenTable, authorization: str | None) -> bool:
    """Whether the ``Authorization`` header lets its sender read ``/metrics``."""
    dedicated = settings.http.metrics_token
    if dedicated is None and not tokens.enabled:
        return True  # no token anywhere: serve is bound to loopback (check_bind)
    presented = bearer_token(authorization)
    if presented is None:
        return False
    if dedicated is not None:
        expected = hashlib.sha256(dedicated.get_secret_value().strip().encode()).digest()
        return hmac.compare_digest(expected, hashlib.sha256(presented.encode()).digest())
    tenant = tokens.tenant_of(presented)
    return tenant is not None and may_open_dashboard(settings, tenant)


async def metrics(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    if not may_scrape(ctx.settings, ctx.tokens, request.headers.get("authorization")):
        return HTTPError(
            401,
            "/metrics needs Authorization: Bearer <MIMOQ_METRICS_TOKEN> (or the token of a "
            "tenant who may open the dashboard)",
            headers={"WWW-Authenticate": 'Bearer realm="mimoq-metrics"'},
        ).response()
    fleet = getattr(request.app.state, "fleet", None)
    if fleet is not None and fleet.desired_workers is not None:
        try:
            await fleet.desired_workers(ctx.front.producer.redis)
        except (RedisError, OSError) as exc:  # the gauge keeps its last value
            log.warning("metrics.desired_workers_failed", error=type(exc).__name__)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
