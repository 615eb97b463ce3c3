"""Redis commands counted by the server itself (``INFO commandstats``: commands run inside
scripts included), for tests that hold what a path costs to a budget."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from typing import Any

from redis.asyncio import Redis

#: What a counting test sends itself (its reads of the counters, the client's handshake).
COUNTING: frozenset[str] = frozenset(
    {"info", "config|resetstat", "config", "ping", "client|setinfo", "hello"}
)


async def command_calls(redis: Redis, *, own: Collection[str] = COUNTING) -> Counter[str]:
    """Calls per command (``zadd``, ``script|load``...) since the last ``CONFIG RESETSTAT``,
    without ``own``: the commands the test itself sends."""
    stats: dict[str, Any] = await redis.info("commandstats")
    calls = Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})
    for command in own:
        calls.pop(command, None)
    return calls
