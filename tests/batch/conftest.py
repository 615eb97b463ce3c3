"""Batch fixtures: the simulator as MiMo (reset per test), the ``mimoq`` command, and a worker
and a producer on the module's ``settings``."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis

from mimoq.core.settings import Settings
from mimoq.producer.client import Producer
from mimoq.sim.sim_config import SimConfig
from mimoq.sim.sim_server import RunningSim, start_in_thread
from mimoq.worker.arq_worker import MimoqWorker
from tests.e2e.conftest import API_KEY, running_worker
from tests.support.cli import clean_env


@pytest.fixture(scope="session")
def batch_sim_server() -> Iterator[RunningSim]:
    # A little latency, so that a run is still going when a test interrupts it.
    with start_in_thread(SimConfig(api_key=API_KEY, latency_ms=5)) as sim:
        yield sim


@pytest.fixture
def sim(batch_sim_server: RunningSim) -> RunningSim:
    sim_stats(batch_sim_server, reset=True)
    return batch_sim_server


@pytest.fixture
async def worker(settings: Settings, redis: ArqRedis) -> AsyncIterator[MimoqWorker]:
    """A worker on the test's ``settings`` (each module that uses it defines them)."""
    async with running_worker(settings) as w:
        yield w


@pytest.fixture
def producer(redis: ArqRedis, settings: Settings) -> Producer:
    return Producer(redis, settings)


def sim_stats(sim: RunningSim, *, reset: bool = False) -> dict[str, Any]:
    """``GET /_sim/stats`` (or ``POST /_sim/reset``) over HTTP, as any client would."""
    if reset:
        request = urllib.request.Request(sim.base + "/_sim/reset", method="POST", data=b"")
    else:
        request = urllib.request.Request(sim.base + "/_sim/stats")
    with urllib.request.urlopen(request, timeout=10) as response:  # loopback only
        data: dict[str, Any] = json.loads(response.read())
        return data


def add_fault(sim: RunningSim, **fault: Any) -> None:
    request = urllib.request.Request(
        sim.base + "/_sim/faults", method="POST", data=json.dumps(fault).encode(),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10):
        pass


def batch_env(sim: RunningSim, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``mimoq`` process: the simulator as MiMo, our data dir."""
    env = clean_env()
    env.update(
        MIMO_API_KEY=API_KEY, MIMO_BASE_URL=sim.url, MIMOQ_DATA_DIR=str(data_dir),
        MIMOQ_LIMITS_ENABLED="false", MIMOQ_POLL_DELAY_S="0.01", MIMOQ_BACKOFF_BASE_S="0.01",
        MIMOQ_BACKOFF_MAX_S="0.05",
    )  # fmt: skip
    env.update(extra)
    return env
