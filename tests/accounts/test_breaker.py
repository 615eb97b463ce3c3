"""The breaker's Redis protocol, and pauses seen from in-process workers and the simulator."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from arq.connections import ArqRedis
from prometheus_client import REGISTRY

from mimoq.core.errors import (
    AuthenticationError,
    PaymentRequiredError,
    RateLimitedError,
    UpstreamUnavailable,
)
from mimoq.core.keypool import fingerprint
from mimoq.core.scripts.replies import GateVerdict
from mimoq.producer.client import Producer
from mimoq.sim.sim_accounts import AccountState
from mimoq.sim.sim_config import SimConfig
from mimoq.worker.accounts.breaker import (
    PAUSED_SET,
    Breaker,
    read_paused,
    resume_by_hand,
    trips,
)
from tests.accounts.conftest import pool_settings, simulator
from tests.conftest import RedisServer
from tests.e2e.conftest import running_worker
from tests.support.polling import eventually

pytestmark = [pytest.mark.redis]
KEYS = ["sk-breaker-one-000", "sk-breaker-two-000"]


def breaker(redis: ArqRedis, **kw: float) -> Breaker:
    values = {"probe_base_s": 0.2, "probe_max_s": 0.5, "pause_max_s": 60.0, "trip_429s": 3}
    values.update(kw)
    return Breaker(redis, **values)  # type: ignore[arg-type]


def test_account_errors_trip_and_request_errors_do_not() -> None:
    assert trips(PaymentRequiredError("x", status=402))
    assert trips(AuthenticationError("x", status=401))
    assert not trips(UpstreamUnavailable("x", status=503))


async def test_exactly_one_caller_of_the_fleet_gets_each_probe(redis: ArqRedis) -> None:
    # The next interval (2 s) leaves the 50 racing callers ample time on a loaded host.
    b = breaker(redis, probe_base_s=1.0, probe_max_s=60)
    assert await b.trip("acct", PaymentRequiredError("no funds", status=402))
    assert not await b.trip("acct", PaymentRequiredError("again", status=402))  # once
    assert (await b.gate("acct")).verdict is GateVerdict.PAUSED
    await eventually(lambda: _due(redis), what="the first probe to be due (Redis's clock)")
    gates = await asyncio.gather(*(b.gate("acct") for _ in range(50)))
    assert [g.verdict for g in gates].count(GateVerdict.PROBE) == 1
    assert {g.verdict for g in gates} == {GateVerdict.PROBE, GateVerdict.PAUSED}
    [paused] = await read_paused(redis)
    assert (paused.account, paused.status, paused.probes) == ("acct", 402, 1)
    assert paused.reason == "no funds"
    assert await b.resume("acct")
    assert (await b.gate("acct")).verdict is GateVerdict.OPEN
    assert await read_paused(redis) == []


async def _due(redis: ArqRedis) -> bool:
    probe_at = float(await redis.hget("mimoq:account:acct", "probe_at") or 0)
    seconds, micros = await redis.time()
    return seconds + micros / 1e6 >= probe_at


async def test_probe_intervals_double_up_to_the_cap(redis: ArqRedis) -> None:
    b = breaker(redis, probe_base_s=0.01, probe_max_s=0.05)
    await b.trip("acct", AuthenticationError("revoked", status=401))
    intervals = []
    deadline = time.monotonic() + 10
    while len(intervals) < 4 and time.monotonic() < deadline:
        gate = await b.gate("acct")
        if gate.verdict is GateVerdict.PROBE:
            intervals.append(gate.seconds)
        await asyncio.sleep(0.005)
    assert intervals == [0.02, 0.04, 0.05, 0.05]


async def test_a_pause_past_its_maximum_expires(redis: ArqRedis) -> None:
    b = breaker(redis, probe_base_s=30, probe_max_s=30, pause_max_s=0.05)
    await b.trip("acct", AuthenticationError("revoked", status=401))
    await eventually(
        lambda: _verdict_is(b, GateVerdict.EXPIRED), what="the pause to outlive its maximum"
    )


async def _verdict_is(b: Breaker, verdict: GateVerdict) -> bool:
    return (await b.gate("acct")).verdict is verdict


async def test_a_run_of_429s_trips_and_a_success_ends_the_run(redis: ArqRedis) -> None:
    b = breaker(redis, trip_429s=3)
    limited = RateLimitedError("slow down", status=429)
    assert not await b.rate_limited("acct", limited)
    assert not await b.rate_limited("acct", limited)
    await b.succeeded("acct")
    assert not await b.rate_limited("acct", limited)
    assert not await b.rate_limited("acct", limited)
    assert await b.rate_limited("acct", limited)
    [paused] = await read_paused(redis)
    assert paused.status == 429 and "in a row" in paused.reason
    assert await resume_by_hand(redis, "acct")
    assert not await resume_by_hand(redis, "acct")


@pytest.mark.slow
async def test_a_burst_402_defers_jobs_and_a_pause_past_its_maximum_fails_them_once(
    redis_server: RedisServer, redis: ArqRedis, tmp_path: Path
) -> None:
    key = KEYS[0]
    with simulator(SimConfig(api_keys=(key,))) as sim:
        sim.app.accounts.set_state(fingerprint(key), AccountState.BURST_402)
        settings = pool_settings(
            redis_server, sim.url, tmp_path / "data", [key], accounts={"probe_base_s": 0.05, "probe_max_s": 0.1, "pause_max_s": 1.5},
        )  # fmt: skip
        producer = Producer(redis, settings)
        ids = [(await producer.enqueue({"kind": "speech", "input": f"Hi {i}."})).job_id
               for i in range(20)]  # fmt: skip
        async with running_worker(settings):
            await eventually(lambda: _is_paused(redis, fingerprint(key)), what="the pause")
            await eventually(lambda: _probed(redis, fingerprint(key), 3), what="three probes")
            gauge = REGISTRY.get_sample_value("mimoq_account_paused", {"account": fingerprint(key)})
            assert gauge == 1
            assert await _results(redis, ids) == []  # the 402 burst failed nothing
            done = [await producer.wait(i, timeout_s=60) for i in ids]
        assert {r.status for r in done} == {"failed"}
        assert {(r.error or {}).get("type") for r in done} == {"payment_required_error"}
        assert all("paused since" in str((r.error or {}).get("message")) for r in done)
        assert all(r.tries == 1 for r in done)  # the deferrals were not tries
        failures = await redis.lrange("mimoq:failures", 0, -1)
        assert len(failures) == len(ids)  # each job failed once


async def _probed(redis: ArqRedis, account: str, n: int) -> bool:
    return int(await redis.hget(f"mimoq:account:{account}", "probes") or 0) >= n


async def _is_paused(redis: ArqRedis, account: str) -> bool:
    return bool(await redis.sismember(PAUSED_SET, account))


async def _results(redis: ArqRedis, ids: list[str]) -> list[object]:
    return [json.loads(r) for r in await redis.mget([f"mimoq:result:{i}" for i in ids]) if r]


@pytest.mark.slow
async def test_one_of_two_accounts_revoked_mid_run_the_other_finishes_the_backlog(
    redis_server: RedisServer, redis: ArqRedis, tmp_path: Path
) -> None:
    with simulator(SimConfig(api_keys=tuple(KEYS), latency_ms=5)) as sim:
        settings = pool_settings(
            redis_server, sim.url, tmp_path / "data", KEYS, worker={"concurrency": 4}, accounts={"probe_base_s": 0.1, "probe_max_s": 0.2},
        )  # fmt: skip
        producer = Producer(redis, settings)
        ids = [(await producer.enqueue({"kind": "speech", "input": f"Line {i}."})).job_id
               for i in range(100)]  # fmt: skip
        revoked = fingerprint(KEYS[0])
        async with running_worker(settings):
            await eventually(lambda: _at_least(redis, ids, 10), what="ten results")
            sim.app.accounts.set_state(revoked, AccountState.REVOKED)
            done = [await producer.wait(i, timeout_s=120) for i in ids]
            assert await _is_paused(redis, revoked)
        assert {r.status for r in done} == {"succeeded"}
        served = [r.account for r in done]
        assert served.count(fingerprint(KEYS[1])) > 50  # it took over the revoked one's share
        [paused] = await read_paused(redis)
        assert paused.account == revoked and paused.status == 401


async def _at_least(redis: ArqRedis, ids: list[str], n: int) -> bool:
    return len(await _results(redis, ids)) >= n


async def test_a_foreign_or_damaged_pause_record_never_blocks_or_fails_jobs(
    redis: ArqRedis,
) -> None:
    # Anyone with Redis access may write these keys (a foreign producer, a bad migration).
    await redis.hset("mimoq:account:acct", mapping={"since": "yesterday", "probes": "many"})
    await redis.sadd(PAUSED_SET, "acct", "ghost")
    assert await read_paused(redis) == []  # the operator commands skip what they cannot read
    b = breaker(redis)
    assert (await b.gate("acct")).verdict is GateVerdict.OPEN
    assert not await redis.exists("mimoq:account:acct")
    assert not await redis.sismember(PAUSED_SET, "acct")
    assert await b.trip("acct", AuthenticationError("revoked", status=401))  # works again


@pytest.mark.slow
async def test_an_idle_worker_shows_pauses_and_their_end_on_its_gauge(
    redis_server: RedisServer, redis: ArqRedis, tmp_path: Path
) -> None:
    key = "sk-idle-gauge-0000"
    account = fingerprint(key)
    settings = pool_settings(redis_server, "http://127.0.0.1:9/v1", tmp_path / "data", [key])

    async def gauge_is(value: float) -> bool:
        return REGISTRY.get_sample_value("mimoq_account_paused", {"account": account}) == value

    async with running_worker(settings):  # no job: only the heartbeat reads the breaker
        await breaker(redis).trip(account, PaymentRequiredError("no funds", status=402))
        await eventually(lambda: gauge_is(1), what="the gauge to show the pause")
        assert await resume_by_hand(redis, account)
        await eventually(lambda: gauge_is(0), what="the gauge to show the resume")
