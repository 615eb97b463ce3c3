"""What a time's format costs the Redis server: epoch seconds as floats, as the limiter
writes them, against whole milliseconds and whole microseconds, side by side.

    python bench/score_format.py [--iterations 5000] [--rounds 6] [--hogs 2]

One private redis-server. Each format runs the same Lua loop (one ``EVALSHA`` of
``--iterations`` steps): a time computed in Lua, written as a sorted-set score (``ZADD``) and a
hash field (``HSET``), read back (``ZSCORE``, ``HGET``, ``tonumber``) and used as a range bound
(``ZCOUNT '(' .. t``), as the limiter's scripts do with its schedule, log and tickets. Four
sorted sets: 64 and 100 short members (listpacks, which keep each score as text; 100 is
about the grant log of a model at MiMo's real quota), 100 members as long as the limiter's
lease ids (longer than a listpack's longest value: a skiplist, which keeps doubles, from its
first member) and 1,000 short members (a skiplist by its size). The formats run in turn,
their order reversed every round, with ``--hogs`` processes spinning on the host's cores;
the server's own microseconds per step (``INFO commandstats``, the script's time with the
commands it ran) are summed over the rounds, and each format is given as a ratio to epoch
seconds.

``bench/redis_cost.py --profile`` says how much of a real fleet's Redis CPU goes to floats
printed and parsed (glibc's ``%.17g`` and ``strtod``); this says what a format change would
save of it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import redis as sync_redis
from _support import Services, start_hogs, stop_hogs

from mimoq.worker.limiter.core import LEASE_ID_HEX

#: name, the first time and the step between two, as the Lua loop reads them (text)
FORMATS = (
    ("epoch seconds (float)", "1796623686.4838121", "0.0012345"),
    ("whole milliseconds", "1796623686484", "1"),
    ("whole microseconds", "1796623686483812", "1234"),
)
#: a column: its heading, its members and how long each is (0: short, ``m<i>``)
SETS = (
    ("64 members", 64, 0),
    ("100 members", 100, 0),
    ("100 lease ids", 100, LEASE_ID_HEX),
    ("1000 members", 1000, 0),
)

LOOP = """
local first, step, members = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local prefix = ARGV[5]
for i = 1, tonumber(ARGV[1]) do
  local t = first + i * step
  local member = prefix .. (i % members)
  redis.call('ZADD', KEYS[1], t, member)
  redis.call('HSET', KEYS[2], 'tat', t)
  local back = tonumber(redis.call('ZSCORE', KEYS[1], member))
  local tat = tonumber(redis.call('HGET', KEYS[2], 'tat'))
  redis.call('ZCOUNT', KEYS[1], '(' .. string.format('%.17g', back - tat + t), '+inf')
end
return 1
"""


def member_prefix(length: int, members: int) -> str:
    """What each of ``members`` members starts with, its number after it: ``m``, or padded
    so that the longest member is ``length`` long."""
    return "m" if length == 0 else "m".ljust(length - len(str(members - 1)), "0")


def measure(
    client: sync_redis.Redis, sha: str, args: argparse.Namespace
) -> dict[tuple[str, str], float]:
    """Server microseconds per step, for each (format, set), summed over the rounds."""
    usec: dict[tuple[str, str], float] = {}
    for round_no in range(args.rounds):
        order = FORMATS if round_no % 2 == 0 else tuple(reversed(FORMATS))
        for column, size, length in SETS:
            prefix = member_prefix(length, size)
            for name, first, step in order:
                keys = (f"z:{name}:{column}", f"h:{name}:{column}")
                client.delete(*keys)
                # filled once first, so every timed step updates a member that is there
                client.evalsha(sha, 2, *keys, size, first, step, size, prefix)
                client.config_resetstat()
                client.evalsha(sha, 2, *keys, args.iterations, first, step, size, prefix)
                spent = int(client.info("commandstats")["cmdstat_evalsha"]["usec"])
                usec[(name, column)] = usec.get((name, column), 0.0) + spent
    steps = args.rounds * args.iterations
    return {key: total / steps for key, total in usec.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5000, help="steps of one loop")
    parser.add_argument("--rounds", type=int, default=6, help="loops of each format and size")
    parser.add_argument("--hogs", type=int, default=2, help="processes spinning on the cores")
    args = parser.parse_args()
    hogs = start_hogs(args.hogs)
    try:
        with tempfile.TemporaryDirectory(prefix="mimoq-score-") as tmp, Services(Path(tmp)) as svc:
            client = sync_redis.Redis.from_url(svc.redis().url)
            try:
                per_step = measure(client, client.script_load(LOOP), args)
            finally:
                client.close()
    finally:
        stop_hogs(hogs)
    print(
        f"{args.rounds} rounds x {args.iterations} steps of each format and set, "
        f"{args.hogs} CPU hogs; server us per step (ZADD, HSET, ZSCORE, HGET, ZCOUNT and the Lua)"
    )
    print(f"{'format':<24}" + "".join(f"{column:>16}{'vs float':>10}" for column, _, _ in SETS))
    base = FORMATS[0][0]
    for name, _, _ in FORMATS:
        row = f"{name:<24}"
        for column, _, _ in SETS:
            us = per_step[(name, column)]
            row += f"{us:>16.2f}{us / per_step[(base, column)]:>9.2f}x"
        print(row)
    short, long = per_step[(base, "100 members")], per_step[(base, "100 lease ids")]
    print(
        f"epoch seconds in 100 lease ids (a skiplist) against 100 short members (a listpack): "
        f"{long / short:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
