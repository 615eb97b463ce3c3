"""Where a limiter script's Redis CPU goes: the Lua around its commands, side by side.

    python bench/lua_overhead.py [--calls 3000]

One private redis-server; each row is ``--calls`` calls of one script with the limiter's
keys and its configuration argument, timed by the server itself (``INFO commandstats``: the
microseconds of each EVALSHA or FCALL, its Lua and the commands it runs, and separately
those commands' own microseconds):

- an empty script (``return 1``): what any script call costs;
- the same, decoding the configuration's JSON (``cjson.decode``), as every limiter
  script did first;
- the limiter's shared prelude (``limiter_common.lua``, bound to the call) and ``return 1``,
  sent as a script: every function it defines, defined again on every call;
- ``next_free`` (the prelude, Redis TIME and the state read), a granted ``acquire`` and its
  ``release`` (a quota far from binding), and a new job's ``acquire`` that queues (a
  ticket), then back early: each twice, as the limiter runs them (functions of one Redis
  function library, ``FCALL``: the prelude's functions defined once per server, the
  configuration decoded only when its text changes) and as scripts sent with ``EVALSHA``
  (how the limiter ran them before; the same Lua), in turn.

The last column is what is left for Lua (the call's microseconds less its commands'). The
decisions run four times, in turn EVALSHA, FCALL, FCALL, EVALSHA, each on keys of its own;
a summary gives each decision's mean microseconds per call both ways, and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from unittest import mock

from _support import Services
from redis.asyncio import Redis

from mimoq.core import scripts, wire
from mimoq.core.dialect_constants import TTS_MODEL
from mimoq.core.errors import CapacityDeferred
from mimoq.worker.limiter import RedisLimiter
from mimoq.worker.limiter import core as limiter_core
from mimoq.worker.limiter.config import LimiterConfig, admission_keys, limiter_keys

#: commandstats rows that are not a script's own commands
_NOT_INNER = frozenset(
    {"cmdstat_evalsha", "cmdstat_fcall", "cmdstat_config|resetstat", "cmdstat_script|load"}
)


async def measure(
    redis: Redis,
    name: str,
    call: Callable[[int], Awaitable[object]],
    calls: int,
) -> float:
    """Time ``calls`` calls; print the row and return the microseconds per call."""
    for i in range(3):  # loads the script or library and warms the keys
        await call(-1 - i)
    await redis.config_resetstat()
    for i in range(calls):
        await call(i)
    stats = await redis.info("commandstats")
    script = stats.get("cmdstat_evalsha") or stats["cmdstat_fcall"]
    n = int(script["calls"])
    inner = sum(int(v["usec"]) for k, v in stats.items() if k not in _NOT_INNER)
    per_call = int(script["usec"]) / n
    print(f"{name:<40}{per_call:>10.2f}{inner / n:>12.2f}{per_call - inner / n:>10.2f}")
    return per_call


@contextlib.contextmanager
def sent_as(mode: str) -> Iterator[None]:
    """The limiter's decisions as it runs them (``fcall``), or as the EVALSHA scripts of
    the same Lua it ran before (``evalsha``): the baseline, kept here to be measured."""
    if mode == "fcall":
        yield
        return
    with mock.patch.object(
        limiter_core, "_limiter_script", lambda decision: scripts.named(f"limiter_{decision}")
    ):
        yield


#: The decision rows, in order.
DECISIONS = ("next_free", "acquire granted + release", "acquire: a ticket, back early")


async def decisions(redis: Redis, mode: str, calls: int, turn: int) -> list[float]:
    """The decision rows sent as ``mode``, on keys of this ``turn``'s own."""
    out: list[float] = []
    label = "FCALL" if mode == "fcall" else "EVALSHA"

    open_quota = LimiterConfig(account=f"open-{mode}-{turn}", window_s=1.0, default_rpm=10_000_000)
    limiter = RedisLimiter(open_quota, redis)
    keys = limiter_keys(open_quota.account, TTS_MODEL) + admission_keys(TTS_MODEL)
    config = [wire.dumps(limiter._config(TTS_MODEL))]
    with sent_as(mode):
        next_free = limiter_core._limiter_script("next_free")

        async def free(_: int) -> object:
            return await next_free.run(redis, keys, config)

        out.append(await measure(redis, f"next_free ({label})", free, calls))

        async def granted(i: int) -> None:
            lease = await limiter.acquire(TTS_MODEL, job_id=f"g{i}", lane="bulk", tenant="t")
            await limiter.release(lease, usage=None, latency_s=0.1, lag_s=0.01)

        out.append(await measure(redis, f"acquire granted + release ({label})", granted, calls))
        # a quota that binds (one call per 1,000 s): every ask queues, far beyond the hold
        bound = LimiterConfig(account=f"bound-{mode}-{turn}", window_s=1000.0, default_rpm=1)
        binding = RedisLimiter(bound, redis)

        async def ask(i: int) -> None:
            with contextlib.suppress(CapacityDeferred):
                await binding.acquire(TTS_MODEL, job_id=f"t{max(i, 0) % (calls // 2 or 1)}")

        out.append(await measure(redis, f"acquire: a ticket, back early ({label})", ask, calls))
    return out


async def run(url: str, calls: int) -> None:
    redis = Redis.from_url(url)
    limiter = RedisLimiter(LimiterConfig(account="open", window_s=1.0), redis)
    keys = limiter_keys("open", TTS_MODEL) + admission_keys(TTS_MODEL)
    config = [wire.dumps(limiter._config(TTS_MODEL))]  # the argument every limiter call sends
    empty = scripts.LuaScript("return 1")
    decode = scripts.LuaScript("local Q = cjson.decode(ARGV[1]) return 1")
    prelude = scripts.LuaScript(scripts.source("limiter_common") + "\nbind(KEYS, ARGV) return 1")
    print(f"{calls} calls per row; the configuration argument is {len(config[0])} bytes")
    print(f"{'script':<40}{'us/call':>10}{'commands':>12}{'Lua':>10}")
    await measure(redis, "empty", lambda _: empty.run(redis, keys, config), calls)
    await measure(
        redis, "decode the configuration", lambda _: decode.run(redis, keys, config), calls
    )
    await measure(
        redis, "limiter prelude (EVALSHA)", lambda _: prelude.run(redis, keys, config), calls
    )
    # in turn, EVALSHA, FCALL, FCALL, EVALSHA: a server slowing as its keys grow, or a host
    # busier in one half, weighs on both sides alike
    rows: dict[str, list[list[float]]] = {"evalsha": [], "fcall": []}
    for turn, mode in enumerate(("evalsha", "fcall", "fcall", "evalsha")):
        rows[mode].append(await decisions(redis, mode, calls, turn))
    print(f"{'decision':<40}{'EVALSHA':>10}{'FCALL':>10}{'EVALSHA/FCALL':>15}")
    for i, name in enumerate(DECISIONS):
        before = sum(r[i] for r in rows["evalsha"]) / len(rows["evalsha"])
        after = sum(r[i] for r in rows["fcall"]) / len(rows["fcall"])
        print(f"{name:<40}{before:>10.2f}{after:>10.2f}{before / after:>14.2f}x")
    await redis.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mimoq-lua-") as tmp, Services(Path(tmp)) as services:
        asyncio.run(run(services.redis().url, args.calls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
