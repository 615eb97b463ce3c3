"""``bench/grant_replay.py``: the saved state's leases re-keyed to the length under test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from mimoq.core.dialect_constants import TTS_MODEL
from mimoq.worker.limiter.config import KEY_PARTS, limiter_keys
from tests.conftest import RedisServer
from tests.support.bench_scripts import load_bench

pytestmark = pytest.mark.redis


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.mark.parametrize(("hex_digits", "zset", "hash"), [(32, "listpack", "listpack"),
                                                           (80, "skiplist", "hashtable")])  # fmt: skip
async def test_leases_get_fresh_ids_of_the_length_and_keep_their_scores(
    client: Redis, hex_digits: int, zset: str, hash: str
) -> None:
    bench = load_bench("grant_replay")
    keys = dict(zip(KEY_PARTS, limiter_keys("acct", TTS_MODEL), strict=True))
    # the state as a mix at the other length left it
    old = [f"{'x' * (112 - hex_digits)}{i:02d}" for i in range(3)]
    await client.zadd(keys["log"], {old[0]: 10.5, old[1]: 11.25, old[2]: 12.0})
    await client.zadd(keys["ilog"], {old[1]: 11.25})
    await client.zadd(keys["leases"], {old[2]: 342.0})
    await client.hset(keys["tokens"], mapping={old[0]: 40, old[2]: 77})
    await client.pexpire(keys["log"], 60_000)

    await bench.rekey_leases(client, keys, hex_digits)

    log = await client.zrange(keys["log"], 0, -1, withscores=True)
    assert [score for _, score in log] == [10.5, 11.25, 12.0]
    assert all(len(lease) == hex_digits for lease, _ in log)
    new = [lease for lease, _ in log]
    # one lease, one new id, wherever it is kept
    assert await client.zrange(keys["ilog"], 0, -1, withscores=True) == [(new[1], 11.25)]
    assert await client.zrange(keys["leases"], 0, -1, withscores=True) == [(new[2], 342.0)]
    assert await client.hgetall(keys["tokens"]) == {new[0]: b"40", new[2]: b"77"}
    assert 0 < await client.pttl(keys["log"]) <= 60_000
    assert await client.pttl(keys["ilog"]) == -1  # none before, none after
    encodings = {part: await client.object("encoding", keys[part]) for part in ("log", "tokens")}
    assert encodings == {"log": zset.encode(), "tokens": hash.encode()}
