"""The periodic admission round runs once per model and interval across the fleet, not once
per worker (mimoq.worker.limiter.admission): each worker's round cost about 17 commands per
model and second, a fixed cost that grew with the number of workers (issue #22)."""

from __future__ import annotations

import pytest
from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.core.dialect_constants import ASR_MODEL, TTS_MODEL
from mimoq.worker.limiter.admission import Admitter
from tests.support.commandstats import command_calls

pytestmark = pytest.mark.redis


class CountingLimiter:
    """Records the models each admission round was run for (what the round calls)."""

    def __init__(self) -> None:
        self.rounds: list[str] = []

    async def admit(self, model: str) -> int:
        self.rounds.append(model)
        return 0


async def test_one_worker_of_the_fleet_runs_each_models_round(redis: ArqRedis) -> None:
    await redis.sadd(wire.WAIT_MODELS_KEY, TTS_MODEL, ASR_MODEL)  # type: ignore[misc]
    workers = [CountingLimiter() for _ in range(3)]
    for limiter in workers:
        await Admitter(limiter, clock=lambda: 0.0).tick(redis)  # type: ignore[arg-type]
    assert [w.rounds for w in workers] == [[ASR_MODEL, TTS_MODEL], [], []]
    # held for a little under the interval, so its own next round is not kept from it
    assert 0 < await redis.pttl(wire.admit_round_key(TTS_MODEL)) <= 900
    # once the hold has gone (its expiry), the next worker to tick runs the round
    await redis.delete(wire.admit_round_key(TTS_MODEL))
    await Admitter(workers[1], clock=lambda: 0.0).tick(redis)  # type: ignore[arg-type]
    assert workers[1].rounds == [TTS_MODEL]


async def test_with_limits_off_every_worker_runs_every_round(redis: ArqRedis) -> None:
    """Limits off, the rounds are how waiting bulk jobs are admitted (a batch each)."""
    await redis.sadd(wire.WAIT_MODELS_KEY, TTS_MODEL)  # type: ignore[misc]
    workers = [CountingLimiter() for _ in range(2)]
    for limiter in workers:
        admitter = Admitter(limiter, one_per_fleet=False, clock=lambda: 0.0)  # type: ignore[arg-type]
        await admitter.tick(redis)
    assert [w.rounds for w in workers] == [[TTS_MODEL], [TTS_MODEL]]


async def test_an_interval_of_zero_always_runs_the_round(redis: ArqRedis) -> None:
    await redis.sadd(wire.WAIT_MODELS_KEY, TTS_MODEL)  # type: ignore[misc]
    limiter = CountingLimiter()
    admitter = Admitter(limiter, interval_s=0.0)  # type: ignore[arg-type]
    await admitter.tick(redis)
    await admitter.tick(redis)
    assert limiter.rounds == [TTS_MODEL, TTS_MODEL]


async def test_the_waiting_gauges_are_sampled_once_a_gauge_interval(redis: ArqRedis) -> None:
    """Each sample reads every tenant's list of each model and lane: once per heartbeat
    interval (the worker's), not at every round."""
    await redis.sadd(wire.WAIT_MODELS_KEY, TTS_MODEL)  # type: ignore[misc]
    await redis.rpush(wire.wait_list_key(TTS_MODEL, "t-a"), "j1", "j2")  # type: ignore[misc]
    await redis.rpush(wire.wait_ring_key(TTS_MODEL), "t-a")  # type: ignore[misc]
    now = [0.0]
    admitter = Admitter(
        CountingLimiter(), interval_s=1.0, gauge_interval_s=10.0, clock=lambda: now[0]
    )  # type: ignore[arg-type]
    reads = []
    for at in (0.0, 1.0, 5.0, 10.0):
        now[0] = at
        await redis.config_resetstat()
        await admitter.tick(redis)
        reads.append((await command_calls(redis)).get("llen", 0))
    assert reads == [1, 0, 0, 1]  # the one tenant's bulk list, at 0 s and 10 s
