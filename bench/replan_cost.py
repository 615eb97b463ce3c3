"""What a re-plan of the limiter's queue costs Redis, by the number of tickets queued.

    python bench/replan_cost.py [--calls 200] [--tickets 50,200,1000]

A re-plan (the rate recovering after a 429, a new token calibration) and a 429's move of
the queue read every ticket of both lanes and move them in bulk. One private
redis-server; each row is ``--calls`` EVALSHA calls, timed by the server itself (``INFO
commandstats``), over a queue of N tickets (one in five interactive, three tenants):

- the schedule's read as it was: a ``ZUNION`` of the two lanes, then a ``ZMSCORE`` of every
  ticket to learn its lane again;
- the schedule's read now (``all_tickets``): each lane's ``ZRANGE``, merged in Lua;
- a whole re-plan (``replan``, every ticket moved), the read included.

The two reads run after the limiter's prelude, as every limiter script does: the rows
differ only in the read. Compare rows within one run: this host's readings move between
sessions.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from _support import Services
from redis.asyncio import Redis

from mimoq.core import scripts, wire
from mimoq.core.dialect_constants import TTS_MODEL
from mimoq.worker.limiter import RedisLimiter
from mimoq.worker.limiter.config import KEY_PARTS, LimiterConfig, admission_keys, limiter_keys

#: The limiter's prelude, bound to the call's keys and configuration as each decision is.
PRELUDE = scripts.source("limiter_common") + "\nbind(KEYS, ARGV)\n"
#: The read the re-plan and a 429's move made before: the lanes' union, then each ticket's
#: lane read back (retime_all split the moved tickets by lane with a ZMSCORE).
UNION_READ = scripts.LuaScript(
    PRELUDE
    + """
local tickets = redis.call('ZUNION', 2, BTICKETS, ITICKETS, 'WITHSCORES')
local ids = {}
for i = 1, #tickets / 2 do ids[i] = tickets[2 * i - 1] end
local n = 0
for i = 1, #ids, CHUNK do
  local part = redis.call('ZMSCORE', BTICKETS, unpack(ids, i, math.min(i + CHUNK - 1, #ids)))
  for j = 1, #part do if part[j] then n = n + 1 end end
end
return #ids
"""
)
MERGED_READ = scripts.LuaScript(PRELUDE + "\nlocal ids = all_tickets()\nreturn #ids")
#: plan_f unset: nothing is kept, every ticket moves
REPLAN = scripts.LuaScript(
    PRELUDE
    + """
local now = now_s()
local st = load_state()
st.plan_f = nil
replan(st, factor(st, now), now)
return #all_tickets()
"""
)


async def queue(redis: Redis, keys: dict[str, str], tickets: int) -> None:
    """``tickets`` queued slots 5 ms apart from a second from now, each job in arq's queue."""
    await redis.flushall()
    start = time.time() + 1.0
    pipe = redis.pipeline(transaction=False)
    held: dict[str, int] = {}
    for i in range(tickets):
        job = f"job-{i:06d}"
        lane = "interactive" if i % 5 == 0 else "bulk"
        field = f"{lane}:t{i % 3}"
        held[field] = held.get(field, 0) + 1
        pipe.zadd(keys[f"{lane}_tickets"], {job: start + i * 0.005})
        pipe.hset(keys["ticket_tenant"], job, field)
        pipe.zadd(wire.QUEUE_NAME, {job: int((start + i * 0.005) * 1000)})
    for field, n in held.items():
        pipe.hset(keys["tenant_tickets"], mapping={field: n, f"last:{field}": start})
    await pipe.execute()


async def per_call(
    redis: Redis, script: scripts.LuaScript, keys: Sequence[str], config: str, calls: int
) -> tuple[float, float]:
    """Server microseconds per call: the whole script, and the commands it ran."""
    await script.run(redis, keys, [config])  # loads it
    await redis.config_resetstat()
    for _ in range(calls):
        await script.run(redis, keys, [config])
    stats = await redis.info("commandstats")
    script_row = stats["cmdstat_evalsha"]
    inner = sum(
        int(v["usec"])
        for k, v in stats.items()
        if k not in ("cmdstat_evalsha", "cmdstat_config|resetstat")
    )
    return int(script_row["usec"]) / calls, inner / calls


async def run(url: str, calls: int, sizes: list[int]) -> None:
    redis = Redis.from_url(url)
    limiter = RedisLimiter(LimiterConfig(account="a", window_s=1.0), redis)
    keys = limiter_keys("a", TTS_MODEL) + admission_keys(TTS_MODEL)
    named = dict(zip(KEY_PARTS, limiter_keys("a", TTS_MODEL), strict=True))
    config = wire.dumps(limiter._config(TTS_MODEL))
    print(f"{calls} calls per row; server microseconds per call (the commands' share)")
    header = ["read: union", "read: merged", "ratio", "re-plan"]
    print(f"{'tickets':>8}  {header[0]:>18}  {header[1]:>18}  {header[2]:>6}  {header[3]:>18}")
    for n in sizes:
        await queue(redis, named, n)
        union, union_inner = await per_call(redis, UNION_READ, keys, config, calls)
        merged, merged_inner = await per_call(redis, MERGED_READ, keys, config, calls)
        replan, replan_inner = await per_call(redis, REPLAN, keys, config, calls)
        print(
            f"{n:>8}  {union:>9.1f} ({union_inner:>6.1f})  {merged:>9.1f} ({merged_inner:>6.1f})"
            f"  {union / merged:>5.2f}x  {replan:>9.1f} ({replan_inner:>6.1f})"
        )
    await redis.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--tickets", default="50,200,1000", help="queue sizes, comma-separated")
    args = parser.parse_args()
    sizes = [int(n) for n in args.tickets.split(",")]
    with tempfile.TemporaryDirectory(prefix="mimoq-replan-") as tmp, Services(Path(tmp)) as svc:
        asyncio.run(run(svc.redis().url, args.calls, sizes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
