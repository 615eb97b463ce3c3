"""A real worker's metrics (scraped over HTTP), heartbeat, /healthz and ``mimoq health``.

Private redis-server, the simulator as MiMo, a real arq worker in this process serving its
endpoint on a free loopback port; every number is read from ``/metrics`` before and after.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis

from mimoq.cli import main
from mimoq.core import failures, wire
from mimoq.core.audio import WavFormat
from mimoq.core.jobs import JobResult
from mimoq.producer.client import Producer
from mimoq.sim.audio_gen import wav_header_with_text
from mimoq.sim.faults import Fault
from mimoq.sim.sim_server import RunningSim
from mimoq.worker import metrics
from mimoq.worker.arq_worker import build_worker
from mimoq.worker.call_latency import CALL_LATENCIES
from tests.conftest import RedisServer
from tests.ops.conftest import Samples, ops_settings, scrape, serving_worker, value
from tests.support.polling import eventually
from tests.support.receiver import Receiver, Response

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TTS = "mimo-v2.5-tts"
ASR = "mimo-v2.5-asr"


async def scraped(port: int) -> Samples:
    return await asyncio.to_thread(scrape, port)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def run(producer: Producer, job: dict[str, Any]) -> JobResult:
    enqueued = await producer.enqueue(job)
    return await producer.wait(enqueued.job_id, timeout_s=60)


async def test_metrics_change_as_a_speech_job_runs(
    redis_server: RedisServer, redis: ArqRedis, sim: RunningSim, receiver: Receiver, tmp_path: Path
) -> None:
    # Without the limiter, so that the 429 is retried at once rather than after a cool-down.
    settings = ops_settings(redis_server, sim, tmp_path, limiter={"enabled": False})
    sim.state.add_fault(Fault(kind="status", status=429, match="metered words"))
    async with serving_worker(settings) as (_, port):
        before = await scraped(port)
        result = await run(
            Producer(redis, settings),
            {"kind": "speech", "input": "metered words", "callback": {"url": receiver.url()}},
        )
        await asyncio.to_thread(receiver.wait_for, 1, 10.0)
        after = await eventually(
            lambda: _after_callback(port, before), what="the callback counted, no job in flight"
        )
    assert result.status == "succeeded" and result.output is not None and result.usage
    expected = {
        ("mimoq_jobs_total", ("kind", "speech"), ("outcome", "retried")): 1,
        ("mimoq_jobs_total", ("kind", "speech"), ("outcome", "succeeded")): 1,
        ("mimoq_job_retries_total", ("kind", "speech"), ("error_type", "rate_limit_error")): 1,
        ("mimoq_job_duration_seconds_count", ("kind", "speech"), ("model", TTS)): 2,
        ("mimoq_mimo_responses_total", ("model", TTS), ("status", "429")): 1,
        ("mimoq_mimo_responses_total", ("model", TTS), ("status", "2xx")): 1,
        ("mimoq_mimo_rate_limited_total", ("model", TTS)): 1,
        ("mimoq_mimo_request_duration_seconds_count", ("model", TTS)): 2,
        ("mimoq_callback_attempts_total", ("outcome", "delivered")): 1,
        ("mimoq_audio_bytes_total", ("kind", "speech"), ("model", TTS)): result.output.bytes,
        ("mimoq_tokens_total", ("model", TTS)): result.usage["total_tokens"],
    }
    got = {key: delta(before, after, key[0], **dict(key[1:])) for key in expected}
    assert got == expected
    seconds = delta(before, after, "mimoq_audio_seconds_total", kind="speech", model=TTS)
    assert seconds == pytest.approx(result.output.duration_s, abs=0.001)


async def _after_callback(port: int, before: Samples) -> Samples | None:
    after = await scraped(port)
    # The job's outcome is counted once its result is recorded, the callback's once it is
    # delivered, and the gauge on the worker's next poll after both tasks have ended.
    done = (
        delta(before, after, "mimoq_callback_attempts_total", outcome="delivered")
        and delta(before, after, "mimoq_jobs_total", kind="speech", outcome="succeeded")
        and value(after, "mimoq_jobs_in_flight") == 0
    )
    return after if done else None


def speech_wav(path: Path, text: str, *, rate: int = 16_000, seconds: float = 1.5) -> Path:
    """A WAV the simulator 'hears' as ``text`` (it reads the embedded comment back)."""
    samples = b"\x10\x00" * int(rate * seconds)
    path.write_bytes(wav_header_with_text(WavFormat(rate, 1, 16), len(samples), text) + samples)
    return path


async def test_transcription_counts_the_audio_sent(
    redis_server: RedisServer, redis: ArqRedis, sim: RunningSim, tmp_path: Path
) -> None:
    settings = ops_settings(redis_server, sim, tmp_path)
    wav = speech_wav(tmp_path / "clip.wav", "counted audio")
    async with serving_worker(settings) as (_, port):
        before = await scraped(port)
        result = await run(Producer(redis, settings), {"kind": "transcription", "file": str(wav)})
        # Counted right after the result is recorded, so possibly after the producer saw it.
        after = await eventually(
            lambda: _when(port, lambda now: delta(before, now, "mimoq_jobs_total",
                                                   kind="transcription", outcome="succeeded")),
            what="the job to be counted",
        )  # fmt: skip
    assert result.status == "succeeded" and result.text == "counted audio"
    labels = {"kind": "transcription", "model": ASR}
    assert delta(before, after, "mimoq_audio_bytes_total", **labels) == wav.stat().st_size
    assert delta(before, after, "mimoq_audio_seconds_total", **labels) == pytest.approx(1.5)
    assert delta(before, after, "mimoq_jobs_total", kind="transcription", outcome="succeeded") == 1
    assert delta(before, after, "mimoq_mimo_responses_total", model=ASR, status="2xx") == 1


async def test_deferrals_queue_depth_and_dead_letters(
    redis_server: RedisServer, redis: ArqRedis, sim: RunningSim, receiver: Receiver, tmp_path: Path
) -> None:
    # One request per minute for TTS: the second job must wait for the fleet limiter.
    settings = ops_settings(redis_server, sim, tmp_path, limiter={"rpm": {TTS: 1}})
    receiver.respond(Response(status=410))  # the first callback's endpoint is gone
    producer = Producer(redis, settings)
    async with serving_worker(settings) as (_, port):
        before = await scraped(port)
        started = time.monotonic()
        first = await run(
            producer, {"kind": "speech", "input": "one", "callback": {"url": receiver.url()}}
        )
        second = await producer.enqueue({"kind": "speech", "input": "two"})

        def settled(now: Samples) -> bool:
            return (
                delta(before, now, "mimoq_jobs_total", kind="speech", outcome="deferred") >= 1
                and value(now, "mimoq_queue_depth", state="deferred") == 1
                # the gauges are a heartbeat's sample: one taken before the second job's
                # deferral (it due, the first's callback backstop deferred) showed one
                # deferred too; this one must have seen the speech job deferred
                and sum(
                    value(now, "mimoq_unfinished_jobs", state="deferred", lane=lane, kind="speech")
                    for lane in ("interactive", "bulk")
                )
                == 1
                and delta(before, now, "mimoq_dead_letters_total", reason="gone") == 1
                and value(now, "mimoq_dead_letters_stored") == 1
            )

        after = await eventually(
            lambda: _when(port, settled), what="deferral, queue depth and dead letter"
        )
        # the slot is counted from the first grant: time a loaded host spent since comes off
        elapsed = time.monotonic() - started
        status = await producer.status(second.job_id)
    assert first.status == "succeeded"
    assert status.status.value == "deferred"  # still waiting for its slot, not lost
    waited = delta(before, after, "mimoq_limiter_deferral_seconds_sum", model=TTS)
    assert waited > 30 - elapsed  # put off by most of the slot, not retried in a loop
    assert delta(before, after, "mimoq_callback_attempts_total", outcome="dead_lettered") == 1
    assert value(after, "mimoq_queue_depth", state="due") == 0


async def test_a_job_in_flight_is_not_counted_as_due(
    redis_server: RedisServer, redis: ArqRedis, sim: RunningSim, tmp_path: Path
) -> None:
    """arq leaves a job it runs in the queue under its past score until it ends: while a
    worker runs it, it is neither due (waiting for a worker) nor deferred."""
    settings = ops_settings(redis_server, sim, tmp_path)
    sim.state.add_fault(Fault(kind="latency", ms=4000, match="held in flight"))
    producer = Producer(redis, settings)
    async with serving_worker(settings) as (worker, port):
        key = wire.WORKER_HEARTBEAT_PREFIX + worker.heartbeat.worker_id
        job = await producer.enqueue({"kind": "speech", "input": "held in flight"})
        # A beat that saw the job running, then a later one: the first one's sample of the
        # queue has been published by the time the second is written (beats are sequential).
        seen = await eventually(lambda: _beat(redis, key, lambda b: b["in_flight"] == 1),
                                what="a beat with the job in flight")  # fmt: skip
        await eventually(lambda: _beat(redis, key, lambda b: b["beat_at"] > seen["beat_at"]),
                         what="the next beat")  # fmt: skip
        during = await scraped(port)
        still_running = (await producer.status(job.job_id)).status.value == "in_progress"
        result = await producer.wait(job.job_id, timeout_s=60)
    assert still_running  # so every sample published so far was taken while it ran
    assert value(during, "mimoq_queue_depth", state="due") == 0
    assert value(during, "mimoq_queue_depth", state="deferred") == 0
    assert result.status == "succeeded"


async def _beat(redis: ArqRedis, key: str, ready: Any) -> dict[str, Any] | None:
    raw = await redis.get(key)
    beat = json.loads(raw) if raw else None
    return beat if beat is not None and ready(beat) else None


def last_json_line(out: str) -> Any:
    # stdout also holds the worker's own log lines (structlog's default before configure()).
    return json.loads(out.strip().splitlines()[-1])


async def _when(port: int, ready: Any) -> Samples | None:
    now = await scraped(port)
    return now if ready(now) else None


async def test_heartbeat_healthz_and_health_command(
    redis_server: RedisServer,
    redis: ArqRedis,
    sim: RunningSim,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    # `mimoq health` runs in a thread of this process and counts a worker live within 3
    # beats: at the suite's 50 ms beat a loaded host's 150 ms stall read as dead (seen once
    # at a load of 9 on 2 cores). Half a second keeps the check about liveness, not load.
    settings = ops_settings(redis_server, sim, tmp_path, ops={"heartbeat_interval_s": 0.5})
    async with serving_worker(settings) as (worker, port):
        key = wire.WORKER_HEARTBEAT_PREFIX + worker.heartbeat.worker_id
        record = json.loads(await eventually(lambda: redis.get(key), what="a heartbeat"))
        healthz = await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/healthz")
        alive_code = await asyncio.to_thread(main, ["health"])
        alive = last_json_line(capsys.readouterr().out)
    assert record["metrics_port"] == port and record["draining"] is False
    assert healthz.status_code == 200
    assert healthz.json()["worker_id"] == worker.heartbeat.worker_id
    assert alive_code == 0 and alive["live"] == 1
    assert alive["workers"][0]["worker_id"] == worker.heartbeat.worker_id

    # A worker that stopped cleanly removes its record and stops serving.
    assert await redis.get(key) is None
    assert await asyncio.to_thread(main, ["health"]) == 1
    assert last_json_line(capsys.readouterr().out) == {
        "healthy": False, "live": 0, "required": 1, "workers": [], "accounts_paused": [],
    }  # fmt: skip
    with pytest.raises(httpx.ConnectError):
        await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/healthz")


async def test_a_job_arq_fails_itself_is_counted_and_listed(
    redis_server: RedisServer, redis: ArqRedis, sim: RunningSim, tmp_path: Path
) -> None:
    """An id in the queue whose job record expired: arq fails it without running our task."""
    settings = ops_settings(redis_server, sim, tmp_path)
    async with serving_worker(settings) as (_, port):
        before = await scraped(port)
        await redis.zadd(wire.QUEUE_NAME, {"vanished": 1})
        after = await eventually(
            lambda: _when(port, lambda now: delta(before, now, "mimoq_jobs_total",
                                                   kind="unknown", outcome="failed")),
            what="the expired job to be counted",
        )  # fmt: skip
    assert delta(before, after, "mimoq_jobs_total", kind="unknown", outcome="failed") == 1
    recent = await failures.recent(redis, 5)
    assert [(f["id"], f["error_type"]) for f in recent] == [("vanished", "job_failed")]


async def test_the_desired_workers_gauge_follows_the_waiting_work(
    redis_server: RedisServer, redis: ArqRedis, sim: RunningSim, tmp_path: Path
) -> None:
    # One TTS request a minute: after the first call, bulk jobs wait for the quota.
    settings = ops_settings(redis_server, sim, tmp_path, limiter={"rpm": {TTS: 1}})
    producer = Producer(redis, settings)
    metrics.desired_workers_computed(99)  # whatever an earlier test's worker left in this process
    async with serving_worker(settings) as (worker, port):
        await eventually(  # this worker computes it: nothing waits, no worker is needed
            lambda: _when(port, lambda now: value(now, "mimoq_desired_workers") == 0),
            what="the gauge of an idle fleet",
        )
        # (this process's calls: earlier tests' workers ran in it too)
        # (per account: an earlier test's worker in this process may have used other keys)
        calls_before = {(s.account, s.model): s.calls for s in CALL_LATENCIES.samples()}
        assert (await run(producer, {"kind": "speech", "input": "one"})).status == "succeeded"
        key = wire.WORKER_HEARTBEAT_PREFIX + worker.heartbeat.worker_id

        async def latency_beaten() -> dict[str, Any] | None:
            record = json.loads(await redis.get(key) or "{}")
            tts = [
                s
                for s in record.get("call_latency", [])
                if s["model"] == TTS
                and s["calls"] == min(calls_before.get((s["account"], TTS), 0) + 1, 200)
            ]
            return tts[0] if tts else None

        sample = await eventually(latency_beaten, what="the call's p90 in the heartbeat")
        assert 0 < sample["p90_s"] < 30
        for i in range(30):
            await producer.enqueue({"kind": "speech", "input": f"w{i}", "priority": "bulk"})
        # 30 jobs, but the quota feeds a tiny fraction of one slot: one worker, not 30
        busy = await eventually(
            lambda: _when(port, lambda now: value(now, "mimoq_desired_workers") > 0),
            what="the gauge to see the backlog",
        )
    assert value(busy, "mimoq_desired_workers") == 1


async def test_metrics_count_every_unfinished_job_past_the_interactive_cap(
    redis_server: RedisServer, redis: ArqRedis, sim: RunningSim, tmp_path: Path
) -> None:
    """#19: a tenant's interactive jobs beyond the 16 it may have queued wait for admission;
    mimoq_unfinished_jobs counts them with the rest (one call a minute: nothing else ends)."""
    settings = ops_settings(redis_server, sim, tmp_path, limiter={"rpm": {TTS: 1}})
    producer = Producer(redis, settings)
    flood = wire.INTERACTIVE_DIRECT + 5
    for i in range(flood):
        job = {"id": f"flood-{i}", "kind": "speech", "input": f"flood {i}", "tenant": "alpha"}
        await producer.enqueue(job)
    async with serving_worker(settings) as (_, port):

        async def counted() -> dict[str, float] | None:
            now = await scraped(port)
            results = [wire.result_key(f"flood-{i}") for i in range(flood)]
            finished = int(await redis.exists(*results))
            states = {
                state: value(now, "mimoq_unfinished_jobs", state=state, lane="interactive",
                             kind="speech")
                for state in ("queued", "waiting", "deferred", "in_flight")
            }  # fmt: skip
            settled = sum(states.values()) == flood - finished and states["waiting"] > 0
            return states if settled and finished >= 1 else None

        states = await eventually(counted, what="every unfinished job counted")
    # each grant of the tenant's admits one of its waiting jobs: the rest still wait
    assert 0 < states["waiting"] <= flood - wire.INTERACTIVE_DIRECT


async def test_a_worker_beats_once_started_before_its_first_poll_takes_a_job(
    redis_server: RedisServer, redis: ArqRedis, sim: RunningSim, tmp_path: Path
) -> None:
    """Others judge a worker's in-flight entries by its heartbeat record, so a worker
    records the jobs it takes only after a beat. The first beat is written at start-up
    (arq's on_startup, before the polling loop): written by the first poll, it came between
    taking the first jobs and recording them, and a worker killed there left its job to
    arq's in-progress timeout instead of the orphan sweep."""
    settings = ops_settings(redis_server, sim, tmp_path)
    worker = build_worker(settings, redis=redis, handle_signals=False)
    key = wire.WORKER_HEARTBEAT_PREFIX + worker.heartbeat.worker_id
    await Producer(redis, settings).enqueue({"kind": "speech", "input": "not taken yet"})
    worker.ctx["redis"] = redis  # as arq's main() sets it before on_startup
    assert worker.on_startup is not None
    try:
        await worker.on_startup(worker.ctx)
        beat = json.loads(await redis.get(key) or "null")
        assert beat is not None and beat["in_flight"] == 0
        assert worker.heartbeat.recorded
        assert not worker.tasks  # nothing taken: the polling loop has not run
    finally:
        assert worker.on_shutdown is not None
        await worker.on_shutdown(worker.ctx)
