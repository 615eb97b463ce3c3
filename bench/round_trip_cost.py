"""What a round trip costs the Redis server's CPU, whatever it carries, side by side.

    python bench/round_trip_cost.py [--trips 20000]

One private redis-server; ``--trips`` round trips per row from one client, one after the
other, and the server's own CPU time (``INFO cpu``: ``used_cpu_sys`` + ``used_cpu_user``)
over them, per round trip:

- a ``PING`` alone;
- a ``GET`` alone;
- a pipeline of 10 ``GET``s (one read of the server, ten commands).

The difference between the last two is what each further command in a round trip costs;
the first two, what the round trip itself does (a read and a write of the socket, the event
loop's turn). This is why ``redis_cost.py`` counts round trips beside commands.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import redis as sync_redis
from _support import Services


def server_cpu_s(client: sync_redis.Redis) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


def per_trip_us(client: sync_redis.Redis, trips: int, trip: Callable[[], object]) -> float:
    before = server_cpu_s(client)
    for _ in range(trips):
        trip()
    return (server_cpu_s(client) - before) / trips * 1e6


def run(url: str, trips: int) -> None:
    client = sync_redis.Redis.from_url(url)
    client.set("bench:key", "value")

    def pipeline_of_ten() -> object:
        pipe = client.pipeline(transaction=False)
        for _ in range(10):
            pipe.get("bench:key")
        return pipe.execute()

    rows = [
        ("PING alone", client.ping),
        ("GET alone", lambda: client.get("bench:key")),
        ("10 GETs in one pipeline", pipeline_of_ten),
    ]
    print(f"{trips} round trips per row; Redis CPU per round trip")
    results = {}
    for name, trip in rows:
        per_trip_us(client, min(trips, 1000), trip)  # warm the connection and the server
        results[name] = per_trip_us(client, trips, trip)
        print(f"{name:<26}{results[name]:>8.1f} us")
    extra = (results["10 GETs in one pipeline"] - results["GET alone"]) / 9
    print(f"each further command in a round trip: {extra:.1f} us")
    client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trips", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mimoq-trip-") as tmp, Services(Path(tmp)) as services:
        run(services.redis().url, args.trips)
    return 0


if __name__ == "__main__":
    sys.exit(main())
