"""A deferral's count (it spends no try): its TTL is set once, by the deferral that creates
it, and a later one sends only its increment (issue #22: a job deferred more than once)."""

from __future__ import annotations

import structlog
from arq import ArqRedis

from mimoq.core import wire
from mimoq.worker import runner
from mimoq.worker.decide import Defer, DeferReason
from tests.support.commandstats import command_calls


async def test_a_deferrals_count_gets_its_ttl_from_the_first_deferral_only(
    redis: ArqRedis,
) -> None:
    key = wire.DEFERRALS_PREFIX + "job-1"
    verdict = Defer(delay_s=0.5, reason=DeferReason.quota)
    bound = structlog.get_logger()
    await runner._deferred(redis, "job-1", verdict, "speech", "mimo-v2.5-tts", bound, counted=0)
    assert await redis.get(key) == b"1"
    assert 0 < await redis.ttl(key) <= runner._DEFERRAL_TTL_S
    await redis.config_resetstat()
    await runner._deferred(redis, "job-1", verdict, "speech", "mimo-v2.5-tts", bound, counted=1)
    assert await command_calls(redis) == {"incrby": 1}
    assert await redis.get(key) == b"2"
    assert 0 < await redis.ttl(key) <= runner._DEFERRAL_TTL_S
