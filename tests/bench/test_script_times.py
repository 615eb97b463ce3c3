"""``bench/redis_cost.py --by-script``: each script's calls by name, from a real server's
SLOWLOG, with the bench's own commands and the commands scripts run left out."""

from __future__ import annotations

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from mimoq.core import scripts, wire
from mimoq.core.dialect_constants import TTS_MODEL
from mimoq.worker.limiter import RedisLimiter
from mimoq.worker.limiter.config import LimiterConfig, admission_keys, limiter_keys
from tests.conftest import start_redis_server
from tests.support.bench_scripts import load_bench

pytestmark = pytest.mark.redis


def test_each_script_is_timed_by_name_and_nothing_else_is_counted_as_a_call() -> None:
    server = start_redis_server()
    own = sync_redis.Redis.from_url(server.url)
    worker = sync_redis.Redis.from_url(server.url)
    try:
        route_set = scripts.named("route_set")
        worker.script_load(route_set.text)  # before: its load is not a job's command
        next_free = scripts.in_library("limiter_next_free")  # a function, by its name
        worker.execute_command("FUNCTION", "LOAD", "REPLACE", next_free.library.code)
        limiter = RedisLimiter(LimiterConfig(account="a", window_s=1.0), Redis())
        keys = limiter_keys("a", TTS_MODEL) + admission_keys(TTS_MODEL)
        config = wire.dumps(limiter._config(TTS_MODEL))
        times = load_bench("redis_cost").ScriptTimes(server.url, [own])
        for account in ("a", "b"):  # each runs a GET and a SET inside
            worker.evalsha(route_set.sha, 1, "mimoq:route:g", account, 60, "")
        worker.execute_command("FCALL", next_free.name, len(keys), *keys, config)
        for _ in range(3):
            worker.get("some-key")
            own.get("the-bench-polling")
        calls, usec = times.stop()
    finally:
        own.close()
        worker.close()
        server.close()
    assert dict(calls) == {
        "route_set": 2,
        "limiter_next_free": 1,
        "(commands outside scripts)": 3,
    }
    assert usec["route_set"] > 0
    assert times.drains >= 2  # the one before the phase and the one at its end
