"""A worker's lease releases go to Redis a model at a time, in batches (limiter/releases.py).

The batch's script applies each release as its own call would have, in turn: the state it
leaves is the one the releases sent one by one leave. The batcher sends a model's releases
together after the linger, flushes on demand (a worker stopping), and a batch Redis refuses
is logged and dropped without stopping the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
import redis as sync_redis
from arq.connections import ArqRedis
from redis.exceptions import ConnectionError as RedisConnectionError

from mimoq.core.dialect_constants import ASR_MODEL, TTS_MODEL
from mimoq.worker.limiter import Lease, LimiterConfig, RedisLimiter
from mimoq.worker.limiter.config import KEY_PARTS, limiter_keys
from mimoq.worker.limiter.releases import ReleaseBatcher
from tests.conftest import RedisServer
from tests.support.polling import eventually

pytestmark = pytest.mark.redis

T0 = 1000.0
#: ASR with a token limit, far from binding: releases settle tokens and calibrate the rate.
CONFIG = LimiterConfig(account="acct", window_s=60, default_rpm=100_000, burst=1000,
                       tpm={ASR_MODEL: 10**9})  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def _state(server: RedisServer, account: str) -> dict[str, Any]:
    """Every limiter key of ASR as plain data (hashes and sorted sets with their scores)."""
    out: dict[str, Any] = {}
    with sync_redis.Redis(port=server.port, decode_responses=True) as r:
        for part, key in zip(KEY_PARTS, limiter_keys(account, ASR_MODEL), strict=True):
            kind = r.type(key)
            # (lease ids differ between the two accounts: compared by their values)
            if part == "tokens":
                out[part] = sorted(r.hvals(key))
            elif kind == "hash":
                # 'touched' and 'hk' are when the bookkeeping last ran: not a release's effect
                out[part] = {k: v for k, v in r.hgetall(key).items() if k not in ("touched", "hk")}
            elif part in ("log", "leases"):
                out[part] = sorted(score for _, score in r.zrange(key, 0, -1, withscores=True))
            elif kind == "zset":
                out[part] = r.zrange(key, 0, -1, withscores=True)
    return out


async def _leases(limiter: RedisLimiter, n: int) -> list[Lease]:
    return [
        await limiter.acquire(ASR_MODEL, job_id=f"j{i}", audio_s=2.0 + i, lane="bulk")
        for i in range(n)
    ]


async def test_one_batch_leaves_the_state_the_releases_one_by_one_leave(
    redis_server: RedisServer, redis: ArqRedis
) -> None:
    usages = [{"total_tokens": 40 + 7 * i} for i in range(4)]
    states = []
    for account in ("one-by-one", "batched"):
        limiter = RedisLimiter(replace(CONFIG, account=account), redis, clock=Clock())
        leases = await _leases(limiter, 4)
        calls = []
        for i, (lease, usage) in enumerate(zip(leases, usages, strict=True)):
            call = {
                "lease": lease.lease_id, "estimate": lease.tokens,
                "actual": usage["total_tokens"], "audio": lease.audio_s,
                "latency": 0.5 + i, "lag": 0.01 * (i + 1),
            }  # fmt: skip
            calls.append(call)
        if account == "one-by-one":
            for call in calls:
                await limiter._send_releases(ASR_MODEL, [call])
        else:
            await limiter._send_releases(ASR_MODEL, calls)
        states.append(_state(redis_server, account))
    alone, together = states
    assert together == alone
    # and they did something: every lease freed, the rate calibrated, latency averaged
    assert together["leases"] == []
    assert float(together["state"]["tok_rate"]) != CONFIG.tokens_per_audio_s
    assert {"lat", "lat_dev", "lag", "lag_dev"} <= set(together["state"])


async def test_a_limiter_with_a_linger_sends_a_models_releases_in_one_call(
    redis: ArqRedis,
) -> None:
    config = replace(CONFIG, release_linger_s=0.05)
    limiter = RedisLimiter(config, redis)
    leases = await _leases(limiter, 3)
    tts = await limiter.acquire(TTS_MODEL, job_id="t")
    sent: list[tuple[str, int]] = []
    send = limiter._send_releases

    async def counted(model: str, calls: list[Mapping[str, Any]]) -> None:
        sent.append((model, len(calls)))
        await send(model, calls)

    assert limiter._releases is not None
    limiter._releases._send = counted
    for lease in [*leases, tts]:
        await limiter.release(lease, usage=None, latency_s=0.1)
    assert sent == []  # still lingering: release() returned at once
    assert (await limiter.snapshot(ASR_MODEL)).in_flight == 3
    await limiter.flush_releases()
    assert sorted(sent) == [(ASR_MODEL, 3), (TTS_MODEL, 1)]
    assert (await limiter.snapshot(ASR_MODEL)).in_flight == 0
    assert (await limiter.snapshot(TTS_MODEL)).in_flight == 0


async def test_the_linger_sends_without_a_flush(redis: ArqRedis) -> None:
    limiter = RedisLimiter(replace(CONFIG, release_linger_s=0.01), redis)
    lease = await limiter.acquire(TTS_MODEL, job_id="t")
    await limiter.release(lease, usage=None, latency_s=0.1)
    assert limiter._releases is not None

    async def released() -> bool:
        return (await limiter.snapshot(TTS_MODEL)).in_flight == 0

    await eventually(released, what="the batch's own timer to send it")
    assert limiter._releases.pending() == 0


@pytest.mark.parametrize(
    ("config", "clocked"),
    [
        (replace(CONFIG, release_linger_s=0.0), False),  # no linger: each release at once
        (replace(CONFIG, release_linger_s=0.05, max_in_flight=4), False),  # a cap binds on it
        (replace(CONFIG, release_linger_s=0.05), True),  # an injected clock: no real time
    ],
)
async def test_releases_go_at_once_without_a_linger_a_cap_or_real_time(
    redis: ArqRedis, config: LimiterConfig, clocked: bool
) -> None:
    limiter = RedisLimiter(config, redis, clock=Clock() if clocked else None)
    lease = await limiter.acquire(TTS_MODEL, job_id="t")
    await limiter.release(lease, usage=None, latency_s=0.1)
    assert (await limiter.snapshot(TTS_MODEL)).in_flight == 0


async def test_a_batch_redis_refuses_is_dropped_and_the_next_one_goes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent: list[list[Mapping[str, Any]]] = []
    fail = True

    async def send(model: str, calls: list[Mapping[str, Any]]) -> None:
        if fail:
            raise RedisConnectionError("gone")
        sent.append(calls)

    batcher = ReleaseBatcher(send, linger_s=60.0)
    batcher.add(TTS_MODEL, {"lease": "a"})
    batcher.add(TTS_MODEL, {"lease": "b"})
    assert batcher.pending() == 2
    await batcher.flush()  # refused: logged, dropped (the leases expire as a dead worker's)
    assert batcher.pending() == 0 and sent == []
    fail = False
    batcher.add(TTS_MODEL, {"lease": "c"})
    await batcher.flush()
    assert sent == [[{"lease": "c"}]]


async def test_a_flush_waits_for_a_send_under_way() -> None:
    started, finish = asyncio.Event(), asyncio.Event()
    sent: list[str] = []

    async def send(model: str, calls: list[Mapping[str, Any]]) -> None:
        started.set()
        await finish.wait()
        sent.extend(str(call["lease"]) for call in calls)

    batcher = ReleaseBatcher(send, linger_s=0.0)
    batcher.add(TTS_MODEL, {"lease": "a"})
    await started.wait()  # the timer's send is under way
    batcher.add(TTS_MODEL, {"lease": "b"})  # the next batch
    flushing = asyncio.create_task(batcher.flush())
    await asyncio.sleep(0)
    assert not flushing.done()
    finish.set()
    await flushing
    assert sorted(sent) == ["a", "b"] and batcher.pending() == 0
