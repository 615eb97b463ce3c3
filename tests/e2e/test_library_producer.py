"""A library user's producer (``from mimoq import …``, ``Producer.from_env``) against a real
worker: the worker's finish path wakes the wait, which never falls back to reading."""

from __future__ import annotations

import asyncio

import pytest

from mimoq import Producer, SpeechJob
from mimoq.core.settings import Settings
from tests.conftest import RedisServer
from tests.e2e.conftest import running_worker

pytestmark = [pytest.mark.redis, pytest.mark.slow]


async def test_from_env_enqueues_and_the_workers_finish_wakes_the_wait(
    settings: Settings, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("MIMOQ_DATA_DIR", str(settings.storage.data_dir))
    async with running_worker(settings), Producer.from_env() as producer:
        jobs = [await producer.enqueue(SpeechJob(input=f"Hello {i}.")) for i in range(3)]
        # fallback_s far past the deadline: only the finish path's message can end the waits.
        waits = [producer.wait(j.job_id, timeout_s=120, fallback_s=3600) for j in jobs]
        results = await asyncio.wait_for(asyncio.gather(*waits), 120)
    assert [r.status for r in results] == ["succeeded"] * 3
    assert [r.id for r in results] == [j.job_id for j in jobs]
