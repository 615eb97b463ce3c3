"""``mimoq serve``: the OpenAI-compatible HTTP front door (see mimoq/http)."""

from __future__ import annotations

import argparse
from typing import Any

from redis.asyncio import Redis

from mimoq.core.errors import ConfigurationError
from mimoq.core.settings import Settings
from mimoq.http.dashboard import FleetView


def register(sub: Any) -> None:
    serve = sub.add_parser(
        "serve",
        help="serve the OpenAI-compatible HTTP API (/v1/audio/*, /v1/jobs) on REDIS_URL",
        description="Jobs sent over HTTP go through Redis to the workers like any producer's; "
        "this process never calls MiMo. Without MIMOQ_API_TOKENS it listens on loopback only.",
    )
    serve.add_argument("--host", help="address to listen on (MIMOQ_HTTP_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (MIMOQ_HTTP_PORT, default 8080)")
    serve.set_defaults(func=_serve, log_level="INFO")


def fleet_view(settings: Settings) -> FleetView:
    """The dashboard's window on workers, limiters and dead letters (worker-layer code)."""
    from mimoq.cli.inspection import inspect, limiter_state
    from mimoq.worker import metrics
    from mimoq.worker.callback_delivery import replay_dead_letter
    from mimoq.worker.run_progress import active_progress, read_progress
    from mimoq.worker.scaling import read_desired_workers

    async def snapshot(redis: Redis) -> dict[str, Any]:
        return await inspect(redis, settings, limit=20, with_usage=True)

    async def limiters(redis: Redis) -> dict[str, Any]:
        return await limiter_state(redis, settings)

    async def replay_one(redis: Redis, delivery_id: str) -> str:
        return (await replay_dead_letter(redis, delivery_id)).value

    async def desired_workers(redis: Redis) -> int:
        workers = (await read_desired_workers(redis, settings)).workers
        metrics.desired_workers_computed(workers)
        return workers

    async def progress(redis: Redis, run: str) -> dict[str, Any] | None:
        found = await read_progress(redis, settings, run)
        return None if found is None else found.to_dict()

    async def runs(redis: Redis) -> list[dict[str, Any]]:
        return [p.to_dict() for p in await active_progress(redis, settings)]

    return FleetView(
        snapshot=snapshot,
        limiters=limiters,
        replay=replay_one,
        desired_workers=desired_workers,
        progress=progress,
        runs=runs,
    )


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from mimoq.http.server import serve

    if not settings.redis_url:
        raise ConfigurationError(
            "mimoq serve needs REDIS_URL: the Redis its workers (`mimoq worker`) read"
        )
    serve(
        settings, args.host or settings.http.host, args.port or settings.http.port,
        fleet_view(settings),
    )  # fmt: skip
    return 0
