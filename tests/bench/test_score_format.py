"""``bench/score_format.py``: each column is the sorted set its heading says."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis as sync_redis

from tests.conftest import RedisServer
from tests.support.bench_scripts import load_bench

pytestmark = pytest.mark.redis


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[sync_redis.Redis]:
    client = sync_redis.Redis.from_url(redis_server.url)
    client.flushall()
    try:
        yield client
    finally:
        client.close()


def test_each_set_is_the_encoding_its_column_names(client: sync_redis.Redis) -> None:
    bench = load_bench("score_format")
    sha = client.script_load(bench.LOOP)
    _, first, step = bench.FORMATS[0]
    encodings = {}
    for column, size, length in bench.SETS:
        prefix = bench.member_prefix(length, size)
        keys = (f"z:{column}", f"h:{column}")
        client.evalsha(sha, 2, *keys, size, first, step, size, prefix)
        encodings[column] = client.object("encoding", keys[0]).decode()
        longest = max(len(m) for m in client.zrange(keys[0], 0, -1))
        assert longest == (length or longest)  # padded: the lease id's length
    assert encodings == {
        "64 members": "listpack",
        "100 members": "listpack",
        "100 lease ids": "skiplist",
        "1000 members": "skiplist",
    }
