"""Fixtures of the unit tests that run one script on every Redis mimoq supports."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from arq.connections import ArqRedis

from mimoq.core.connections import embedded


@pytest.fixture(params=["fakeredis", "redis-server"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[ArqRedis]:
    """One contract, every backend: the embedded stand-in and a real redis-server."""
    if request.param == "fakeredis":
        client = embedded()
    else:
        server = request.getfixturevalue("redis_server")
        client = ArqRedis.from_url(server.url)
        await client.flushall()
    yield client
    await client.aclose()
