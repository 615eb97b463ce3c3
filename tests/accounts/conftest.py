"""Account fixtures: the simulator as MiMo (its own, per test), settings for a key pool."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from mimoq.core.settings import Settings
from mimoq.sim.config import SimConfig
from mimoq.sim.server import RunningSim, start_in_thread
from mimoq.worker.app import MimoqWorker, build_worker, drain_and_close
from tests.conftest import RedisServer


@contextlib.contextmanager
def simulator(config: SimConfig) -> Iterator[RunningSim]:
    with start_in_thread(config) as sim:
        yield sim


def pool_settings(
    redis_server: RedisServer, base_url: str, data_dir: Path, keys: list[str], **overrides: Any
) -> Settings:
    """Time-compressed settings whose key pool is ``keys`` (one account each)."""
    values: dict[str, Any] = {
        "mimo_api_key": None,
        "mimo_api_keys": SecretStr(" ".join(keys)),
        "mimo_numbered_keys": {},
        "mimo_base_url": base_url,
        "redis_url": redis_server.url,
        "data_dir": data_dir,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "max_tries": 4,
        "poll_delay_s": 0.01,
        "limits_enabled": False,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[MimoqWorker]:
    """An in-process worker on its own connection, until the block ends."""
    worker = build_worker(settings, handle_signals=False)
    task = asyncio.create_task(worker.async_run())
    try:
        yield worker
    finally:
        await drain_and_close(worker, grace_s=10)
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture(autouse=True)
def _no_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("MIMO", "XIAOMI")):
            monkeypatch.delenv(name)
