"""A cancelled job's reserved slot goes to the next job, with a real worker (docs/cancel.md).

tests/worker/test_cancel_ticket.py checks the scripts on an injected clock; here the quota is
compressed through settings (slots about 2 s apart), a real arq worker defers the jobs it
cannot serve yet, and the simulator's call log shows when each call really started.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from arq.connections import ArqRedis

from mimoq.core.dialect_constants import TTS_MODEL
from mimoq.producer.cancel import CancelStatus
from mimoq.producer.client import Producer
from mimoq.sim.sim_server import RunningSim
from mimoq.worker.limiter.config import LimiterConfig
from tests.conftest import RedisServer
from tests.e2e.conftest import e2e_settings, running_worker
from tests.support.limiter_tickets import schedule
from tests.support.polling import eventually

pytestmark = [pytest.mark.redis, pytest.mark.slow]
WINDOW_S, RPM = 4.0, 2  # one slot every 2 s (2.04 s at the 0.98 target)
IDS = [f"slot-{i}" for i in range(4)]  # one granted, two holding tickets, one waiting


async def _ticket_holders(redis: ArqRedis, account: str) -> list[str]:
    return [m.decode() for m, _ in await schedule(redis, account, TTS_MODEL)]


async def test_the_last_job_takes_the_cancelled_jobs_slot(
    redis_server: RedisServer, sim: RunningSim, tmp_path: Path, redis: ArqRedis
) -> None:
    settings = e2e_settings(
        redis_server, sim, tmp_path / "data", worker={"concurrency": 4}, limiter={"window_s": WINDOW_S, "rpm": {TTS_MODEL: RPM}},
    )  # fmt: skip
    slot_s = WINDOW_S / (RPM * settings.limiter.target)
    producer = Producer(redis, settings)
    for job_id in IDS:
        await producer.enqueue(
            {"kind": "speech", "input": f"say {job_id} please", "id": job_id, "priority": "bulk"}
        )
    account = LimiterConfig.from_settings(settings).account
    async with running_worker(settings):
        # one job granted, two deferred holding the next two slots (the look-ahead)
        await eventually(lambda: _holders_are(redis, account, 2), timeout_s=20, what="two tickets")
        before = await schedule(redis, account, TTS_MODEL)
        gone, last = before[0][0].decode(), before[-1][0].decode()
        [answer] = await producer.cancel_many([gone])
        assert answer.status is CancelStatus.cancelled and not answer.in_flight
        served = [j for j in IDS if j != gone]
        results = [await producer.wait(job_id, timeout_s=30) for job_id in served]
    assert [r.status for r in results] == ["succeeded"] * 3
    assert sim.state.calls_matching(f"{gone} ") == []
    # the last ticket holder moved into the freed slot: its call started about a slot
    # before the slot it held (Redis TIME and the simulator share this host's clock)
    started = sim.state.calls_matching(f"{last} ")[0].started_at
    assert started < before[-1][1] - 0.5 * slot_s, (before, started, slot_s)


async def _holders_are(redis: ArqRedis, account: str, count: int) -> bool:
    return len(await _ticket_holders(redis, account)) >= count
