"""Riding out Redis outages: a dead pooled connection is not an outage (issue 19, item 9:
after a restart, each worker's idle connections failed once more and logged a second one)."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError
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


class ResettingProxy:
    """A loopback proxy to ``target`` that resets its first ``resets`` connections as soon
    as the client has sent its first command (what a Redis being restarted can do to a
    connection it has just accepted); later ones are piped through."""

    def __init__(self, target_port: int, resets: int) -> None:
        self.target_port = target_port
        self.resets_left = resets
        self.resets_done = 0
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def __aenter__(self) -> ResettingProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.resets_left > 0:
            self.resets_left -= 1
            await reader.read(1)  # the client's first command has begun
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # RST, not FIN
            self.resets_done += 1
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer),
                             return_exceptions=True)  # fmt: skip


async def test_a_connection_reset_during_its_set_up_is_retried(redis_server: RedisServer) -> None:
    """redis-py retried only the socket connect: a reset while the new connection sent its
    set-up commands (CLIENT SETINFO) reached the caller at once, past every retry, and killed
    an arq worker starting a job (CI: test_redis_outage, 'Connection reset by peer')."""
    port = int(redis_server.url.rsplit(":", 1)[1].split("/")[0])
    async with ResettingProxy(port, resets=3) as proxy:
        client = Redis.from_url(proxy.url, **client_options(10))
        try:
            assert await client.ping() is True
            async with client.pipeline(transaction=True) as pipe:  # arq's run_job reads so
                pipe.set("k", "v").get("k")
                assert await pipe.execute() == [True, b"v"]
        finally:
            await client.aclose()
        assert proxy.resets_done == 3


async def test_without_outage_retries_a_reset_set_up_still_fails_at_once(
    redis_server: RedisServer,
) -> None:
    port = int(redis_server.url.rsplit(":", 1)[1].split("/")[0])
    async with ResettingProxy(port, resets=1) as proxy:
        client = Redis.from_url(proxy.url, **client_options(0))  # MIMOQ_REDIS_RETRY_S=0
        try:
            with pytest.raises(ConnectionError):
                await client.ping()
        finally:
            await client.aclose()
