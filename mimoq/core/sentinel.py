"""Sentinel-managed Redis: ``REDIS_URL=redis+sentinel://[user:pass@]host:port[,host:port…]/service[/db]``.

The hosts are the Sentinels; ``service`` is the name they monitor the primary under. Every
client asks them for the current primary and, after a failover, reconnects to the new one
(redis-py's ``SentinelConnectionPool``); with ``core/redis_retry.py`` the commands in
between wait rather than fail. Credentials in the URL are the data nodes' (Sentinels are
reached without them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from arq.connections import ArqRedis
from redis.asyncio.sentinel import Sentinel

from mimoq.core.errors import ConfigurationError

SCHEME = "redis+sentinel"
_FORMAT = "redis+sentinel://[user:password@]host:port[,host:port...]/service-name[/db]"


@dataclass(frozen=True)
class SentinelTarget:
    """Where the Sentinels are and what they call the primary."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def is_sentinel_url(url: str | None) -> bool:
    return bool(url) and str(url).lower().startswith(SCHEME + "://")


def parse(url: str) -> SentinelTarget:
    """The target of a ``redis+sentinel://`` URL; ConfigurationError naming the format."""
    rest = url[len(SCHEME) + 3 :]
    auth, _, hosts_and_path = rest.rpartition("@")
    hosts, _, path = hosts_and_path.partition("/")
    parts = [p for p in path.split("/") if p]
    try:
        sentinels = tuple(_host_port(h) for h in hosts.split(",") if h)
        db = int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise ConfigurationError(f"REDIS_URL: expected {_FORMAT}") from None
    if not sentinels or not parts or len(parts) > 2:
        raise ConfigurationError(f"REDIS_URL: expected {_FORMAT}")
    username, password = None, None
    if auth:
        user, sep, secret = auth.partition(":")
        username, password = (
            (unquote(user) or None, unquote(secret)) if sep else (None, unquote(user))
        )
    return SentinelTarget(sentinels, unquote(parts[0]), db, username, password)


def _host_port(text: str) -> tuple[str, int]:
    split = urlsplit("//" + text)
    if not split.hostname or split.port is None:
        raise ValueError(text)
    return split.hostname, split.port


def primary_client(target: SentinelTarget, **options: Any) -> ArqRedis:
    """An ArqRedis on the current primary, following failovers (``options``: client kwargs)."""
    sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        list(target.sentinels), sentinel_kwargs={"socket_timeout": 2.0}
    )
    client: ArqRedis = sentinel.master_for(
        target.service,
        redis_class=ArqRedis,
        db=target.db,
        username=target.username,
        password=target.password,
        **options,
    )
    return client


async def aclose(client: ArqRedis) -> None:
    """Close a client and, if it came from :func:`primary_client`, its Sentinel connections
    (closing the client alone leaves those open)."""
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    await client.aclose()
    for sentinel_client in getattr(manager, "sentinels", ()):
        await sentinel_client.aclose()
