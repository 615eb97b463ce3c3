"""The limiter's decisions as one Redis function library (``scripts.LuaLibrary``), on a real
redis-server: called by FCALL, loaded only when Redis says the function is missing, one
library per version of the code, and the same answers as the scripts sent by EVALSHA."""

from __future__ import annotations

import pytest
from arq.connections import ArqRedis
from redis.exceptions import ResponseError

from mimoq.core import scripts, wire
from mimoq.core.dialect_constants import TTS_MODEL
from mimoq.worker.limiter import RedisLimiter
from mimoq.worker.limiter.config import LimiterConfig, admission_keys, limiter_keys
from tests.conftest import RedisServer

pytestmark = pytest.mark.redis


def test_the_limiters_decisions_are_the_functions_of_one_library_named_by_its_code() -> None:
    acquire = scripts.in_library("limiter_acquire")
    assert acquire is scripts.in_library("limiter_acquire")
    library = acquire.library
    assert scripts.in_library("limiter_release").library is library
    digest = library.name.removeprefix("mimoq_limiter_common_")
    assert len(digest) == 12 and acquire.name == f"limiter_acquire_{digest}"
    assert library.code.startswith(f"#!lua name={library.name}\n")
    # every decision of the registry's limiter prelude, and nothing else
    members = {n for n, pre in scripts.SCRIPTS.items() if pre == ("limiter_common",)}
    assert set(library.functions) == members
    with pytest.raises(KeyError):
        scripts.in_library("enqueue")  # a script of no library
    # a change to any part of the code is a library of another name
    other = scripts.LuaLibrary(
        "mimoq_limiter_common",
        scripts.source("limiter_common") + "\n-- changed",
        {n: scripts.source(n) for n in sorted(members)},
    )
    assert other.name != library.name


async def test_a_function_runs_by_fcall_and_its_library_is_loaded_again_after_a_flush(
    own_redis: RedisServer,
) -> None:
    """One FCALL per call; FUNCTION LOAD only after "Function not found" (a flush, a new
    server), on its own or from a pipeline's reply."""
    redis = ArqRedis.from_url(own_redis.url)
    try:
        limiter = RedisLimiter(LimiterConfig(account="lib", window_s=1.0), redis)
        keys = limiter_keys("lib", TTS_MODEL) + admission_keys(TTS_MODEL)
        args = [wire.dumps(limiter._config(TTS_MODEL))]
        next_free = scripts.in_library("limiter_next_free")
        await redis.execute_command("FUNCTION", "FLUSH")
        await redis.config_resetstat()
        assert float(await next_free.run(redis, keys, args)) == 0.0  # loaded, run again
        assert float(await next_free.run(redis, keys, args)) == 0.0
        stats = await redis.info("commandstats")
        assert stats["cmdstat_fcall"]["calls"] == 3  # the refused one, then two
        assert stats["cmdstat_function|load"]["calls"] == 1
        await redis.execute_command("FUNCTION", "FLUSH")
        async with redis.pipeline(transaction=False) as pipe:
            next_free.queue(pipe, keys, args)
            (reply,) = await pipe.execute(raise_on_error=False)
        assert scripts.not_loaded(reply)
        assert float(await next_free.settle(redis, reply, keys, args)) == 0.0
        # the limiter's own pipelined read loads it too (routing reads it this way)
        await redis.execute_command("FUNCTION", "FLUSH")
        assert await limiter.next_free_s(TTS_MODEL) == 0.0
        # any other error is the caller's
        with pytest.raises(ResponseError, match=r"WRONGTYPE|wrong kind"):
            await redis.set(keys[0], "not a hash")
            await next_free.run(redis, keys, args)
    finally:
        await redis.aclose()


async def test_the_library_answers_as_the_scripts_do(own_redis: RedisServer) -> None:
    """The same decisions, sent by FCALL and by EVALSHA, on two accounts' keys side by side:
    a queue of asks against a quota that binds gets the same answers both ways."""
    redis = ArqRedis.from_url(own_redis.url)
    try:
        answers = []
        for account, call in (
            ("via-fcall", scripts.in_library),
            ("via-evalsha", scripts.named),
        ):
            limiter = RedisLimiter(LimiterConfig(account=account, window_s=100.0), redis)
            config = limiter._config(TTS_MODEL)
            config["now"] = 1_000.0  # one clock for both: the answers are comparable
            keys = limiter_keys(account, TTS_MODEL) + admission_keys(TTS_MODEL)
            args = [wire.dumps(config)]
            acquire = call("limiter_acquire")
            got = []
            for i in range(5):
                asked = {"job": f"j{i}", "lease": f"l{i}", "lane": "bulk", "tenant": "t"}
                reply = await acquire.run(redis, keys, [*args, wire.dumps(asked)])
                got.append([r.decode() if isinstance(r, bytes) else r for r in reply])
            answers.append(got)
        assert answers[0] == answers[1]
        assert answers[0][0][0] == "granted" and {a[0] for a in answers[0][1:]} == {"ticket"}
    finally:
        await redis.aclose()
