"""Redis connections: a real server from REDIS_URL, or the embedded in-process stand-in."""

from __future__ import annotations

import redis.asyncio as aioredis
from arq.connections import ArqRedis

from mimoq.core import sentinel
from mimoq.core.errors import ConfigurationError
from mimoq.core.redis_retry import client_options
from mimoq.core.settings import Settings


def connect(settings: Settings, *, ride_out_outages: bool = False) -> ArqRedis:
    """A client for the configured Redis; commands that need a shared server call this.

    ``ride_out_outages``: retry every command across a lost connection for up to
    ``MIMOQ_REDIS_RETRY_S`` (long-running commands such as ``mimoq batch``); otherwise an
    unreachable Redis is reported at once.
    """
    if not settings.redis_url:
        raise ConfigurationError(
            "this command needs a shared Redis: set REDIS_URL (e.g. redis://localhost:6379/0)"
        )
    via_sentinel = sentinel.is_sentinel_url(settings.redis_url)
    retry_s = settings.worker.redis_retry_s
    options = client_options(retry_s, sentinel=via_sentinel) if ride_out_outages else {}
    if via_sentinel:
        return sentinel.primary_client(sentinel.parse(settings.redis_url), **options)
    client: ArqRedis = ArqRedis.from_url(settings.redis_url, **options)
    return client


def embedded() -> ArqRedis:
    """An in-process Redis (fakeredis, with Lua) for the one-machine embedded default."""
    # Imported here: fakeredis pulls in numpy (~0.15 s), and every ``mimoq`` process imports
    # this module while only the embedded mode needs it.
    import fakeredis
    from fakeredis.aioredis import FakeConnection

    pool = aioredis.ConnectionPool(
        connection_class=FakeConnection,  # type: ignore[arg-type]  # fakeredis types it as a factory
        server=fakeredis.FakeServer(),
    )
    return ArqRedis(connection_pool=pool)
