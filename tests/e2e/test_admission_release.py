"""A job that fails before its call gives its admission place back at once."""

from __future__ import annotations

import json

import pytest
from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.core.settings import Settings
from mimoq.producer.client import Producer
from tests.e2e.conftest import running_worker

pytestmark = [pytest.mark.redis, pytest.mark.slow]
TTS = "mimo-v2.5-tts"


async def test_a_tenants_failed_jobs_do_not_hold_back_its_next_one(
    redis: ArqRedis, settings: Settings
) -> None:
    # Sixteen interactive jobs the worker refuses (an unknown voice fails before any call)
    # fill the tenant's places in the queue, so its next job waits for admission. Were the
    # places held until they aged out (two limiter windows: 120 s here), it would wait that
    # long; given back as the jobs fail, it runs at the next admission round (~1 s).
    sha = await redis.script_load(wire.enqueue_script())
    bad = {"kind": "speech", "input": "x", "voice": "nobody-by-this-name", "tenant": "svc"}
    for i in range(wire.INTERACTIVE_DIRECT):
        args = (*wire.enqueue_keys(f"bad-{i}"), f"bad-{i}", json.dumps(bad))
        assert await redis.evalsha(sha, 4, *args) == 1
    good = {"kind": "speech", "input": "Hello there.", "tenant": "svc"}
    assert await redis.evalsha(sha, 4, *wire.enqueue_keys("good"), "good", json.dumps(good)) == 1
    assert await redis.zscore(wire.QUEUE_NAME, "good") is None  # it waits its turn
    assert settings.limiter.window_s == 60  # the default: places would age out after 120 s
    producer = Producer(redis, settings)
    async with running_worker(settings):
        failed = [await producer.wait(f"bad-{i}", timeout_s=30) for i in range(16)]
        result = await producer.wait("good", timeout_s=20)
    assert {r.status for r in failed} == {"failed"}
    assert result.status == "succeeded"
    assert not await redis.exists(wire.interactive_admitted_key(TTS, "svc"))
