"""Where a limiter script's Redis CPU goes: the Lua around its commands, side by side.

    python bench/lua_overhead.py [--calls 3000]

One private redis-server; each row is ``--calls`` EVALSHA calls of one script with the
limiter's keys and its configuration argument, timed by the server itself (``INFO
commandstats``: the microseconds of each EVALSHA, its Lua and the commands it runs, and
separately those commands' own microseconds):

- an empty script (``return 1``): what any script call costs;
- the same, decoding the configuration's JSON (``cjson.decode``), as every limiter
  script does first;
- the limiter's shared prelude (``limiter_common.lua``) and ``return 1``;
- ``limiter_next_free.lua``: the prelude, Redis TIME and the state read;
- a granted ``acquire`` and its ``release`` (a quota far from binding), a new job's
  ``acquire`` that queues (a ticket), and a ticket holder's ``acquire`` back early;
- the prelude as a Redis function library instead (``FUNCTION LOAD`` once, ``FCALL``): its
  functions defined once per server, not per call, and the configuration decoded again only
  when its text changes. What a decision would no longer pay per call, the limiter being
  scripts sent with ``EVALSHA`` (issue #22's next step; not how mimoq runs today).

The last column is what is left for Lua: the script's microseconds less its commands'.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from _support import Services
from redis.asyncio import Redis

from mimoq.core import scripts, wire
from mimoq.core.dialect_constants import TTS_MODEL
from mimoq.core.errors import CapacityDeferred
from mimoq.worker.limiter import RedisLimiter
from mimoq.worker.limiter.config import LimiterConfig, admission_keys, limiter_keys

#: commandstats rows that are not a script's own commands
_NOT_INNER = frozenset(
    {"cmdstat_evalsha", "cmdstat_fcall", "cmdstat_config|resetstat", "cmdstat_script|load"}
)


async def measure(
    redis: Redis, name: str, call: Callable[[int], Awaitable[object]], calls: int
) -> None:
    for i in range(3):  # loads the script and warms the keys
        await call(-1 - i)
    await redis.config_resetstat()
    for i in range(calls):
        await call(i)
    stats = await redis.info("commandstats")
    script = stats.get("cmdstat_evalsha") or stats["cmdstat_fcall"]
    n = int(script["calls"])
    inner = sum(int(v["usec"]) for k, v in stats.items() if k not in _NOT_INNER)
    per_call = int(script["usec"]) / n
    print(f"{name:<34}{per_call:>10.2f}{inner / n:>12.2f}{per_call - inner / n:>10.2f}")


async def run(url: str, calls: int) -> None:
    redis = Redis.from_url(url)
    open_quota = LimiterConfig(account="open", window_s=1.0, default_rpm=10_000_000)
    limiter = RedisLimiter(open_quota, redis)
    keys = limiter_keys("open", TTS_MODEL) + admission_keys(TTS_MODEL)
    config = [wire.dumps(limiter._config(TTS_MODEL))]  # the argument every limiter call sends
    empty = scripts.LuaScript("return 1")
    decode = scripts.LuaScript("local Q = cjson.decode(ARGV[1]) return 1")
    prelude = scripts.LuaScript(scripts.source("limiter_common") + "\nreturn 1")
    print(f"{calls} calls per row; the configuration argument is {len(config[0])} bytes")
    print(f"{'script':<34}{'us/call':>10}{'commands':>12}{'Lua':>10}")
    await measure(redis, "empty", lambda _: empty.run(redis, keys, config), calls)
    await measure(
        redis, "decode the configuration", lambda _: decode.run(redis, keys, config), calls
    )
    await measure(redis, "limiter prelude", lambda _: prelude.run(redis, keys, config), calls)
    as_library = await library(redis, keys, config)
    await measure(redis, "the prelude as a library (FCALL)", as_library, calls)
    next_free = scripts.named("limiter_next_free")
    await measure(redis, "next_free", lambda _: next_free.run(redis, keys, config), calls)

    async def granted(i: int) -> None:
        lease = await limiter.acquire(TTS_MODEL, job_id=f"g{i}", lane="bulk", tenant="t")
        await limiter.release(lease, usage=None, latency_s=0.1, lag_s=0.01)

    await measure(redis, "acquire granted + release", granted, calls)
    # a quota that binds (one call per 1,000 s): every ask queues, far beyond the hold
    binding = RedisLimiter(LimiterConfig(account="bound", window_s=1000.0, default_rpm=1), redis)

    async def ask(i: int) -> None:
        with contextlib.suppress(CapacityDeferred):
            await binding.acquire(TTS_MODEL, job_id=f"t{max(i, 0) % (calls // 2 or 1)}")

    await measure(redis, "acquire: a ticket, then back early", ask, calls)
    await redis.aclose()


async def library(
    redis: Redis, keys: list[str], config: list[str]
) -> Callable[[int], Awaitable[object]]:
    """The limiter prelude in a function library: its functions are defined once (by the
    first call: a library's load may not decode JSON), and a call decodes the configuration
    only when its text differs from the last one's."""
    code = (
        "#!lua name=mimoq_overhead\n"
        "local built, raw, Q = nil, nil, nil\n"
        "local function build(KEYS, ARGV)\n"
        f"{scripts.source('limiter_common')}\n"
        "  return load_state\n"
        "end\n"
        "redis.register_function('probe', function(keys, args)\n"
        "  if built == nil then built = build(keys, args) end\n"
        "  if args[1] ~= raw then Q, raw = cjson.decode(args[1]), args[1] end\n"
        "  return 1\n"
        "end)\n"
    )
    await redis.execute_command("FUNCTION", "LOAD", "REPLACE", code)

    async def probe(_: int) -> object:
        return await redis.execute_command("FCALL", "probe", len(keys), *keys, *config)

    return probe


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mimoq-lua-") as tmp, Services(Path(tmp)) as services:
        asyncio.run(run(services.redis().url, args.calls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
