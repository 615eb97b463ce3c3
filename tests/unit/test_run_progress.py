"""A run's progress and ETA read from Redis alone (mimoq.worker.run_progress), on every
Redis mimoq supports, with the limiter's grant log written as a worker would and the
clock injected."""

from __future__ import annotations

import json

from arq.connections import ArqRedis

from mimoq.core import runs, wire
from mimoq.core.settings import Settings
from mimoq.worker.limiter.config import KEY_PARTS, LimiterConfig, limiter_keys
from mimoq.worker.run_progress import read_progress

TTS = "mimo-v2.5-tts"
NOW = 2_000_000_000.0
SETTINGS = Settings(limiter={"window_s": 10, "default_rpm": 100, "account": "acct"})


async def enqueue(redis: ArqRedis, job_id: str, **fields: object) -> None:
    job = {"kind": "speech", "input": "x", "priority": "bulk", **fields}
    assert (
        await redis.eval(
            wire.enqueue_script(), 4, *wire.enqueue_keys(job_id), job_id, json.dumps(job)
        )
        == 1
    )


async def log_grants(redis: ArqRedis, times: list[float], *, interactive: bool = False) -> None:
    account = LimiterConfig.from_settings(SETTINGS).account
    keys = dict(zip(KEY_PARTS, limiter_keys(account, TTS), strict=True))
    prefix = "i" if interactive else "b"
    entries = {f"{prefix}{i}": t for i, t in enumerate(times)}
    await redis.zadd(keys["log"], entries)  # the grant log
    if interactive:
        await redis.zadd(keys["ilog"], entries)  # the interactive grants
    await redis.hset(keys["state"], "lat", "0.5")  # the latency EWMA


async def test_eta_from_the_lanes_grant_rate_and_the_competitors_backlog(
    backend: ArqRedis,
) -> None:
    for i in range(50):
        await enqueue(backend, f"a{i}", tenant="alpha", run="r1")  # a0 is admitted at once
    for i in range(100):
        await enqueue(backend, f"b{i}", tenant="beta")
    # bulk: 2 grants a second over the last 5 s; interactive grants are another lane's
    await log_grants(backend, [NOW - 5 + 0.5 * i for i in range(11)])
    await log_grants(backend, [NOW - 3 + 0.1 * i for i in range(20)], interactive=True)
    await backend.hset(wire.INFLIGHT_KEY, "a1", "w1")  # a worker runs a1
    await backend.set(wire.in_progress_key("a1"), "1")
    progress = await read_progress(backend, SETTINGS, "r1", now=NOW)
    assert progress is not None
    got = progress.to_dict()
    assert (got["total"], got["in_flight"], got["waiting"], got["succeeded"]) == (50, 1, 49, 0)
    # 49 of the run's against beta's 100, at 1 a second each: 49 s, plus one call's latency
    assert got["eta_s"] == 49.5 and got["eta_at"] == NOW + 49.5
    # beta's backlog drains away: the same run now has the whole lane (2 a second)
    for _ in range(100):
        await backend.lpop(wire.wait_list_key(TTS, "beta"))
    progress = await read_progress(backend, SETTINGS, "r1", now=NOW)
    assert progress is not None and progress.to_dict()["eta_s"] == 25.0


async def test_without_grants_measured_the_quotas_pace_stands_in(backend: ArqRedis) -> None:
    for i in range(49):
        await enqueue(backend, f"a{i}", run="r1")
    progress = await read_progress(backend, SETTINGS, "r1", now=NOW)
    assert progress is not None
    # 100 requests per 10 s window at the default target 0.98: 9.8 a second
    assert progress.to_dict()["eta_s"] == round(49 / 9.8, 1)


async def test_a_token_limited_models_pace_is_its_typical_calls_tokens(backend: ArqRedis) -> None:
    """Long recordings: the token quota lets fewer calls through than the request quota."""
    asr = "mimo-v2.5-asr"
    for i in range(20):
        await enqueue(backend, f"a{i}", run="r1", kind="transcription", model=asr)
    config = LimiterConfig.from_settings(SETTINGS)
    quota = config.quota(asr)
    assert quota.tokens is not None
    state = limiter_keys(config.account, asr)[KEY_PARTS.index("state")]
    # nothing granted yet: no typical call to cost, so the requests' pace stands in
    progress = await read_progress(backend, SETTINGS, "r1", now=NOW)
    assert progress is not None and progress.to_dict()["eta_s"] == round(20 / 9.8, 1)
    # the limiter has granted 30 s calls and fitted 28 tokens + 6.25 a second: 215.5 each
    await backend.hset(state, mapping={"audio": "30", "tok_base": "28", "tok_rate": "6.25"})
    per_s = quota.tokens * 0.98 / 10 / 215.5
    assert per_s < 9.8
    progress = await read_progress(backend, SETTINGS, "r1", now=NOW)
    assert progress is not None and progress.to_dict()["eta_s"] == round(20 / per_s, 1)


async def test_an_ended_run_has_no_time_left(backend: ArqRedis) -> None:
    await enqueue(backend, "a0", run="r1")
    await runs.seal(backend, "r1")
    assert await runs.record_finish(backend, "r1", "a0", "failed")
    progress = await read_progress(backend, SETTINGS, "r1", now=NOW)
    assert progress is not None and progress.ended
    got = progress.to_dict()
    assert got["eta_s"] == 0.0 and got["failed"] == 1
    assert abs(got["eta_at"] - got["ended_at"]) <= 0.05
    assert await read_progress(backend, SETTINGS, "nope", now=NOW) is None


async def test_near_the_end_jobs_in_flight_are_read_exactly(backend: ArqRedis) -> None:
    """The workers' in-flight record is a heartbeat old; arq's in-progress keys are not."""
    for i in range(3):
        await enqueue(backend, f"a{i}", run="r1")
    await backend.hset(wire.INFLIGHT_KEY, "a0", "w1")  # stale: a0 ended a moment ago
    for job_id in ("a1", "a2"):
        await backend.set(wire.in_progress_key(job_id), "1")
    await log_grants(backend, [NOW - 2 + 0.5 * i for i in range(5)])  # newest: now
    progress = await read_progress(backend, SETTINGS, "r1", now=NOW + 0.2)
    assert progress is not None
    got = progress.to_dict()
    assert (got["in_flight"], got["waiting"]) == (2, 1)
    # one job to grant at 2 a second (0.5 s), then one latency (0.5 s)
    assert got["eta_s"] == 1.0
