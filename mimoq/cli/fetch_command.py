"""``mimoq fetch ID [--out PATH]``: download a finished job's output, wherever it is stored."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from mimoq.core.connections import connect
from mimoq.core.fetching import download_output
from mimoq.core.objstore import open_storage
from mimoq.core.results import read_result
from mimoq.core.settings import Settings


def register(sub: Any) -> None:
    fetch = sub.add_parser("fetch", help="download a finished job's output from storage")
    fetch.add_argument("id", help="the job id")
    fetch.add_argument(
        "--out", type=Path, help="where to write it (default: the output's file name, here)"
    )
    fetch.set_defaults(func=_fetch)


def _fetch(args: argparse.Namespace, settings: Settings) -> int:
    async def result_of() -> Any:
        redis = connect(settings)  # results live in the shared Redis
        try:
            return await read_result(redis, args.id)
        finally:
            await redis.aclose()

    result = asyncio.run(result_of())
    if result is None or result.output is None:
        state = (
            "has no result (not finished, expired, or unknown)"
            if result is None
            else (f"{result.status} without an output")
        )
        print(f"mimoq: fetch: job {args.id} {state}", file=sys.stderr)
        return 1
    storage = open_storage(settings)
    # Results from before output.url existed name only the key: it is in this storage.
    url = result.output.url or storage.url(result.output.key)
    out: Path = args.out or Path(result.output.key.rsplit("/", 1)[-1])
    try:
        size = download_output(url, out, storage)
    except FileNotFoundError:
        print(f"mimoq: fetch: {url} is no longer in storage", file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps({"id": args.id, "url": url, "out": str(out), "bytes": size}) + "\n")
    return 0
