"""What a finished job's usage costs the Redis primary: added at once against the journal.

    python bench/usage_cost.py [--jobs 20000] [--concurrency 32] [--seed 1]

One private redis-server. The same ``--jobs`` finished jobs' usage is written twice, each
time on a flushed server, as workers write it: one pipeline per job (here carrying only the
usage), ``--concurrency`` jobs at once. The jobs are ``redis_cost.py``'s mix: 3 tenants,
80 % speech (requests, audio out, characters, tokens), 15 % transcription (requests, audio
in, tokens), 5 % failed; windows an hour and a day, spread over two hours.

- ``at once``: ``usage_add.lua``, one ``HINCRBYFLOAT`` per metric and window (a tenant with
  limits is still written so);
- ``journal``: one ``RPUSH`` per job; the push that makes the journal 500 long folds it
  (``usage_fold.lua``), and what is left is folded at the end, as a worker's beat would.

Counted by the server (``INFO commandstats``: commands, scripts' inner ones included, and
their microseconds, the scripts' Lua included), per job. Both runs must leave the same
totals in the windows: the bench checks it, field by field.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from _support import Services
from redis.asyncio import Redis

from mimoq.core import usage_journal, wire
from mimoq.core.dialect_constants import ASR_MODEL, TTS_MODEL
from mimoq.core.tenant_limits import DAY_S, HOUR_S
from mimoq.core.usage_windows import UsageEntry, UsageWrite

T0 = 1_765_000_800.0  # a whole hour: the jobs span this hour and the next
WINDOWS = (HOUR_S, DAY_S)
TENANTS = ("t-a", "t-b", "t-c")
#: commandstats rows that are the bench's own
_OWN = frozenset({"cmdstat_config|resetstat", "cmdstat_flushall", "cmdstat_info"})
#: The commands sent from outside a script here: their microseconds are the server's time
#: (a script's include the commands it runs, which have rows of their own as well).
_TOP = frozenset({"cmdstat_evalsha", "cmdstat_rpush", "cmdstat_lrange", "cmdstat_script|load"})


def jobs(count: int, seed: int) -> list[UsageEntry]:
    rand = random.Random(seed)
    out = []
    for _ in range(count):
        tenant, kind = rand.choice(TENANTS), rand.random()
        if kind < 0.80:
            chars = rand.randint(20, 400)
            amounts = {"requests": 1.0, "audio_out_s": chars / 15, "chars": float(chars),
                       "tokens": float(chars + 40)}  # fmt: skip
            out.append(UsageEntry(tenant, TTS_MODEL, amounts))
        elif kind < 0.95:
            audio = rand.uniform(2.0, 60.0)
            amounts = {"requests": 1.0, "audio_in_s": audio, "tokens": round(audio * 6.5 + 22)}
            out.append(UsageEntry(tenant, ASR_MODEL, amounts))
        else:
            out.append(UsageEntry(tenant, TTS_MODEL, {"failed": 1.0}))
    return out


async def write_all(redis: Redis, entries: list[UsageEntry], journal: bool, lanes: int) -> None:
    """Each entry in a pipeline of its own, ``lanes`` at a time (a worker's concurrency)."""
    queue = list(enumerate(entries))
    span = 2 * HOUR_S / len(entries)

    async def lane() -> None:
        while queue:
            i, entry = queue.pop()
            write = UsageWrite(entry, WINDOWS, T0 + i * span, journal=journal)
            async with redis.pipeline(transaction=False) as pipe:
                write.queue(pipe)
                [reply] = await pipe.execute(raise_on_error=False)
            await write.settle(redis, reply)

    await asyncio.gather(*(lane() for _ in range(lanes)))
    if journal:  # what the beats fold
        await usage_journal.fold(redis, max_batches=10**6)


async def totals(redis: Redis) -> dict[tuple[str, str], float]:
    out = {}
    for window_s in WINDOWS:
        for start in sorted(
            {int(T0 // window_s * window_s), int((T0 + HOUR_S) // window_s * window_s)}
        ):
            key = wire.usage_key(window_s, start)
            for field, value in (await redis.hgetall(key)).items():  # type: ignore[misc]
                out[key, field.decode()] = float(value)
    return out


async def measure(
    redis: Redis, entries: list[UsageEntry], journal: bool, lanes: int
) -> dict[str, Any]:
    await redis.flushall()
    await redis.config_resetstat()
    await write_all(redis, entries, journal, lanes)
    stats = await redis.info("commandstats")
    rows = {k: v for k, v in stats.items() if k not in _OWN}
    return {
        "commands": sum(int(v["calls"]) for v in rows.values()),
        "usec": sum(int(v["usec"]) for k, v in rows.items() if k in _TOP),
        "script_usec": int(rows.get("cmdstat_evalsha", {}).get("usec", 0)),
        "totals": await totals(redis),
    }


async def run(url: str, count: int, lanes: int, seed: int) -> int:
    redis = Redis.from_url(url)
    entries = jobs(count, seed)
    await measure(redis, entries[:200], False, lanes)  # loads the scripts, warms the server
    await measure(redis, entries[:200], True, lanes)
    at_once = await measure(redis, entries, False, lanes)
    journal = await measure(redis, entries, True, lanes)
    await redis.aclose()
    a, j = at_once["totals"], journal["totals"]
    same = a.keys() == j.keys() and all(abs(a[k] - j[k]) <= 1e-6 * max(1.0, abs(a[k])) for k in a)
    print(f"{count} jobs' usage, {lanes} at a time; windows: an hour and a day")
    print(f"{'usage':<10}{'commands/job':>14}{'Redis us/job':>14}{'in scripts':>12}")
    for name, got in (("at once", at_once), ("journal", journal)):
        print(f"{name:<10}{got['commands'] / count:>14.2f}{got['usec'] / count:>14.2f}"
              f"{got['script_usec'] / count:>12.2f}")  # fmt: skip
    print(
        f"journal / at once: commands {journal['commands'] / at_once['commands']:.2f}x, "
        f"Redis time {journal['usec'] / at_once['usec']:.2f}x; "
        f"the same totals in every window: {'yes' if same else 'NO'} ({len(a)} fields)"
    )
    return 0 if same else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mimoq-usage-") as tmp, Services(Path(tmp)) as services:
        return asyncio.run(run(services.redis().url, args.jobs, args.concurrency, args.seed))


if __name__ == "__main__":
    sys.exit(main())
