"""Operations test helpers: scrape a worker's /metrics over HTTP, run a worker serving it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mimoq.core.settings import Settings
from mimoq.sim.sim_config import SimConfig
from mimoq.sim.sim_server import RunningSim, start_in_thread
from mimoq.worker.arq_worker import MimoqWorker, build_worker, drain_and_close
from tests.conftest import RedisServer
from tests.e2e.conftest import API_KEY, e2e_settings
from tests.support.polling import eventually
from tests.support.receiver import Receiver

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int, host: str = "127.0.0.1") -> Samples:
    """Every sample the endpoint serves, keyed by (name, labels)."""
    response = httpx.get(f"http://{host}:{port}/metrics", timeout=5)
    response.raise_for_status()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the labelled series does not exist yet (not incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="session")
def ops_sim() -> Iterator[RunningSim]:
    with start_in_thread(SimConfig(api_key=API_KEY)) as sim:
        yield sim


@pytest.fixture
def sim(ops_sim: RunningSim) -> RunningSim:
    ops_sim.state.reset()
    return ops_sim


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as rx:
        yield rx


def ops_settings(
    redis_server: RedisServer, sim: RunningSim, data_dir: Path, **changes: Any
) -> Settings:
    """The end-to-end settings, with a loopback metrics endpoint and a fast heartbeat."""
    ops = {"metrics_host": "127.0.0.1", "heartbeat_interval_s": 0.05}
    return e2e_settings(redis_server, sim, data_dir, ops=ops).updated(**changes)


@asynccontextmanager
async def serving_worker(settings: Settings) -> AsyncIterator[tuple[MimoqWorker, int]]:
    """An in-process worker serving /metrics on a free port: (worker, port)."""
    worker = build_worker(settings, handle_signals=False, metrics_port=0)
    task = asyncio.create_task(worker.async_run())
    try:
        port = await eventually(
            lambda: worker.metrics_server is not None and worker.heartbeat.liveness().ok
            and worker.metrics_server.port, what="the worker to serve and beat",
        )  # fmt: skip
        yield worker, int(port)
    finally:
        await drain_and_close(worker, grace_s=10)
        with contextlib.suppress(asyncio.CancelledError):
            await task
