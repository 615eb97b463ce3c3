"""End-to-end fixtures: a private redis-server, the simulator as MiMo, a real arq worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis

from mimoq.core.settings import Settings
from mimoq.producer.client import Producer
from mimoq.sim.sim_config import SimConfig
from mimoq.sim.sim_server import RunningSim, start_in_thread
from mimoq.worker.arq_worker import MimoqWorker, build_worker, drain_and_close
from tests.conftest import RedisServer
from tests.support.receiver import Receiver

API_KEY = "sk-e2e-secret-key-0123456789"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture(scope="session")
def sim_server() -> Iterator[RunningSim]:
    with start_in_thread(SimConfig(api_key=API_KEY)) as sim:
        yield sim


@pytest.fixture
def sim(sim_server: RunningSim) -> RunningSim:
    sim_server.state.reset()
    return sim_server


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as rx:
        yield rx


def e2e_settings(
    redis_server: RedisServer, sim: RunningSim, data_dir: Path, **changes: Any
) -> Settings:
    """Loopback-allowed, time-compressed settings (retries in milliseconds, not minutes);
    ``changes`` as for ``Settings.updated``: ``limiter={"window_s": 1}`` keeps the rest."""
    return Settings(
        redis_url=redis_server.url,
        mimo={"key": API_KEY, "base_url": sim.url},
        # Tests write their input files next to the data directory.
        storage={"data_dir": data_dir, "input_roots": str(data_dir.parent)},
        # The limiter stays on, compressed like the retries: at the default 100 requests a
        # minute every call after the first waited 0.6 s for its slot. Tests of pacing set
        # their own quota (limiter rpm, window_s).
        limiter={"default_rpm": 6000},
        retry={"backoff_base_s": 0.01, "backoff_max_s": 0.05, "max_tries": 4},
        worker={"poll_delay_s": 0.01},
        callbacks={
            "secret": WEBHOOK_SECRET,
            "schedule_s": "0,0.05,0.1",
            "allow_networks": "127.0.0.0/8",
        },
    ).updated(**changes)


@pytest.fixture
def settings(redis_server: RedisServer, sim: RunningSim, tmp_path: Path) -> Settings:
    return e2e_settings(redis_server, sim, tmp_path / "data")


@contextlib.asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[MimoqWorker]:
    """A worker on its own connection, running until the block ends."""
    worker = build_worker(settings, handle_signals=False)
    task = asyncio.create_task(worker.async_run())
    try:
        yield worker
    finally:
        await drain_and_close(worker, grace_s=10)
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def worker(settings: Settings, redis: ArqRedis) -> AsyncIterator[MimoqWorker]:
    async with running_worker(settings) as w:
        yield w


@pytest.fixture
def producer(redis: ArqRedis, settings: Settings) -> Producer:
    return Producer(redis, settings)
