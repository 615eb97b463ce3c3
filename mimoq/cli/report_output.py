"""How a command that reads the fleet's state from Redis prints it: one rule for all."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from redis.exceptions import RedisError


def print_fleet_report(
    collect: Coroutine[Any, Any, dict[str, Any]],
    render: Callable[[dict[str, Any]], str],
    *,
    as_json: bool,
) -> int:
    """Run ``collect`` and print its report: JSON when asked or when stdout is not a
    terminal (scripts and pipes), else the readable table. Exit 1 if Redis cannot be read."""
    try:
        report = asyncio.run(collect)
    except (RedisError, OSError) as exc:
        print(f"mimoq: redis: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if as_json or not sys.stdout.isatty():
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(render(report))
    return 0
