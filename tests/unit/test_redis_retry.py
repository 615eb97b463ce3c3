"""Riding out Redis outages: a dead pooled connection is not an outage (issue 19, item 9:
after a restart, each worker's idle connections failed once more and logged a second one)."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from mimoq.core.redis_retry import client_options
from tests.conftest import RedisServer
from tests.support.polling import eventually

pytestmark = pytest.mark.redis


async def test_a_dropped_connection_is_replaced_without_an_outage(
    redis_server: RedisServer,
) -> None:
    """Redis is up; only the connection a command was waiting on is gone (a restart's stale
    socket, a proxy's idle timeout): the command goes on over a new one, nothing logged."""
    client = Redis.from_url(redis_server.url, **client_options(10))
    admin = Redis.from_url(redis_server.url)
    try:
        with capture_logs() as logs:
            pop = asyncio.create_task(client.blpop(["jobs"], timeout=20))
            await eventually(lambda: _blocked(admin), what="BLPOP to be waiting")
            assert await admin.client_kill_filter(_type="normal", skipme=True) == 1
            await admin.rpush("jobs", "one")
            assert await pop == (b"jobs", b"one")
        assert [e["event"] for e in logs] == []
    finally:
        await client.aclose()
        await admin.aclose()


async def _blocked(admin: Redis) -> bool:
    return any(c.get("cmd") == "blpop" for c in await admin.client_list())


async def test_an_outage_is_still_logged_once_each_way(redis_server: RedisServer) -> None:
    client = Redis.from_url(redis_server.url, **client_options(30))
    try:
        await client.set("k", "v")
        redis_server.stop()
        with capture_logs() as logs:
            get = asyncio.create_task(client.get("k"))
            await eventually(lambda: any(e["event"] == "redis.unavailable" for e in logs),
                             what="the outage to begin")  # fmt: skip
            redis_server.start_again()  # AOF on: the key is still there
            assert await get == b"v"
        assert [e["event"] for e in logs] == ["redis.unavailable", "redis.restored"]
    finally:
        await client.aclose()
