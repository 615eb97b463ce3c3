"""Usage totals in Redis windows, and the tenant limit gate, on an injected clock."""

from __future__ import annotations

import json

import pytest
import structlog
from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.core.errors import TenantLimitDeferred
from mimoq.core.jobs import JobResult, SpeechJob, parse_job
from mimoq.core.results import job_status, read_result, write_result_safely
from mimoq.core.tenant_limits import DAY_S, HOUR_S, parse_tenant_limits
from mimoq.core.usage_windows import (
    UsageEntry,
    UsageWrite,
    read_span,
    read_window_totals,
    record,
)
from mimoq.worker import tenant_gate

T0 = 1_765_000_800.0  # a whole hour (and 10 min past a day's start): windows are easy to see
TTS, ASR = "mimo-v2.5-tts", "mimo-v2.5-asr"
WINDOWS = (30, HOUR_S, DAY_S)


def speech(tenant: str | None) -> SpeechJob:
    job = parse_job({"kind": "speech", "input": "Hello there.", "tenant": tenant})
    assert isinstance(job, SpeechJob)
    return job


async def test_totals_add_up_per_tenant_and_model_and_per_tenant(backend: ArqRedis) -> None:
    alpha = {"requests": 1, "audio_out_s": 2.5, "audio_s": 2.5, "chars": 12, "tokens": 30}
    for i in range(3):
        await record(backend, UsageEntry("alpha", TTS, alpha), WINDOWS, T0 + i)
    await record(backend, UsageEntry("alpha", ASR, {"requests": 1, "audio_in_s": 4}), WINDOWS, T0)
    await record(backend, UsageEntry(None, TTS, {"failed": 1}), WINDOWS, T0 + 5)
    await record(backend, UsageEntry("beta", TTS, {}), WINDOWS, T0)  # nothing: no write
    table = await read_span(backend, since_s=DAY_S, now=T0 + 10)
    rows = {(r["tenant"], r["model"]): r for r in table.to_list(totals=True)}
    assert set(rows) == {("alpha", TTS), ("alpha", ASR), ("alpha", "*"), ("_", TTS), ("_", "*")}
    assert rows[("alpha", TTS)]["requests"] == 3 and rows[("alpha", TTS)]["chars"] == 36
    assert rows[("alpha", TTS)]["audio_out_s"] == 7.5 and rows[("alpha", TTS)]["tokens"] == 90
    assert rows[("alpha", "*")]["requests"] == 4 and rows[("alpha", "*")]["audio_in_s"] == 4
    assert rows[("_", "*")]["failed"] == 1 and rows[("_", "*")]["requests"] == 0
    only = await read_span(backend, since_s=HOUR_S, now=T0 + 10, tenant="alpha")
    assert {t for t, _ in only.rows} == {"alpha"}


async def test_a_job_writes_only_its_own_fields_and_totals_are_summed_when_read(
    backend: ArqRedis,
) -> None:
    # one HINCRBYFLOAT per metric the job has: no per-tenant total field, no zeros
    await record(backend, UsageEntry("alpha", TTS, {"requests": 1, "chars": 0}), WINDOWS, T0)
    await record(backend, UsageEntry("alpha", ASR, {"requests": 2}), WINDOWS, T0)
    fields = await backend.hgetall(wire.usage_key(HOUR_S, int(T0)))
    assert fields == {
        b"alpha|mimo-v2.5-tts|requests": b"1",
        b"alpha|mimo-v2.5-asr|requests": b"2",
    }
    limits = parse_tenant_limits("alpha:requests=5/1h")
    assert await read_window_totals(backend, ["alpha"], limits, T0) == {
        "alpha": {("requests", HOUR_S): 3.0}
    }
    # audio_s is the sum of audio in and out: summed when read, for reports and limits
    both = {"requests": 1, "audio_in_s": 1.5, "audio_out_s": 2.0, "audio_s": 3.5}
    await record(backend, UsageEntry("gamma", TTS, both), WINDOWS, T0)
    gamma = await backend.hgetall(wire.usage_key(HOUR_S, int(T0)))
    assert not [f for f in gamma if f.endswith(b"|audio_s")]
    audio = await read_window_totals(
        backend, ["gamma"], parse_tenant_limits("gamma:audio_s=9/1h"), T0
    )
    assert audio == {"gamma": {("audio_s", HOUR_S): 3.5}}
    rows = (await read_span(backend, since_s=HOUR_S, now=T0 + 1)).rows
    assert rows[("gamma", TTS)]["audio_s"] == rows[("gamma", "*")]["audio_s"] == 3.5
    # a window an older worker wrote holds its own "*" total too: it is not counted twice
    await backend.hset(wire.usage_key(HOUR_S, int(T0)), "alpha|*|requests", "3")
    table = await read_span(backend, since_s=HOUR_S, now=T0 + 1)
    assert table.rows[("alpha", "*")]["requests"] == 3
    # a window that exists gets its TTL again only when a field is new in it
    key = wire.usage_key(HOUR_S, int(T0))
    await backend.persist(key)
    await record(backend, UsageEntry("alpha", TTS, {"requests": 1}), WINDOWS, T0)
    assert await backend.ttl(key) == -1
    await record(backend, UsageEntry("beta", TTS, {"requests": 1}), WINDOWS, T0)
    assert await backend.ttl(key) > 8 * DAY_S


async def test_a_window_gets_its_ttl_once_and_ends(backend: ArqRedis) -> None:
    entry = UsageEntry("alpha", TTS, {"requests": 1})
    await record(backend, entry, WINDOWS, T0)
    key = wire.usage_key(30, int(T0))
    ttl = await backend.ttl(key)
    assert 0 < ttl <= 90  # two windows: its own and the next
    assert 8 * DAY_S < await backend.ttl(wire.usage_key(HOUR_S, int(T0))) <= 8 * DAY_S + HOUR_S
    await backend.expire(key, 1000)
    await record(backend, entry, WINDOWS, T0 + 29)  # same window: the TTL is not renewed
    assert await backend.ttl(key) > 90
    await record(backend, entry, WINDOWS, T0 + 30)  # the next window starts from zero
    totals = await read_window_totals(
        backend, ["alpha"], parse_tenant_limits("alpha:requests=5/30s"), T0 + 31
    )
    assert totals == {"alpha": {("requests", 30): 1.0}}


async def test_a_span_sums_the_hours_it_overlaps(backend: ArqRedis) -> None:
    entry = UsageEntry("alpha", TTS, {"requests": 1})
    for hours_ago in (0, 1, 5, 30):
        await record(backend, entry, WINDOWS, T0 - hours_ago * HOUR_S)
    now = T0 + 10  # a span counts each hour it touches whole
    assert (await read_span(backend, since_s=1, now=now)).rows[("alpha", TTS)]["requests"] == 1
    two = await read_span(backend, since_s=HOUR_S, now=now)
    assert two.rows[("alpha", TTS)]["requests"] == 2
    day = await read_span(backend, since_s=DAY_S, now=now)
    assert day.rows[("alpha", TTS)]["requests"] == 3
    weeks = await read_span(backend, since_s=30 * DAY_S, now=now)  # summed from day windows
    assert weeks.rows[("alpha", TTS)]["requests"] == 4


async def test_usage_rides_on_the_result_write_and_survives_a_script_flush(
    backend: ArqRedis,
) -> None:
    result = JobResult(id="j1", kind="speech", status="succeeded", model=TTS, finished_at=T0)
    write = UsageWrite(UsageEntry("alpha", TTS, {"requests": 1}), WINDOWS, T0)
    await backend.script_flush()  # Redis restarted: the script must be loaded again
    written = await write_result_safely(backend, result, ttl_s=60, usage=write)
    assert written.status == "succeeded" and await read_result(backend, "j1") is not None
    await write_result_safely(
        backend, result.model_copy(update={"id": "j2"}), ttl_s=60, usage=write
    )
    totals = await read_window_totals(
        backend, ["alpha"], parse_tenant_limits("alpha:requests=5/1h"), T0
    )
    assert totals["alpha"][("requests", HOUR_S)] == 2


async def test_the_gate_holds_a_tenant_at_its_limit_once_and_lets_others_pass(
    backend: ArqRedis,
) -> None:
    limits = parse_tenant_limits("alpha:requests=2/30s;*:requests=100/1d")
    for _ in range(2):
        await record(backend, UsageEntry("alpha", TTS, {"requests": 1}), limits.windows(), T0)
    await backend.zadd(wire.admitted_key(TTS), {"a1": T0, "b1": T0})

    def clock() -> float:
        return T0 + 10

    await tenant_gate.check(backend, speech("beta"), "b1", limits, clock=clock)
    await tenant_gate.check(backend, speech(None), "n1", limits, clock=clock)
    with structlog.testing.capture_logs() as logs:
        for job_id in ("a1", "a2"):
            with pytest.raises(TenantLimitDeferred) as held:
                await tenant_gate.check(
                    backend, speech("alpha"), job_id, limits, clock=clock, rand=lambda: 0.5
                )
            # back when the 30 s window frees (20 s from now), spread by up to a second
            assert held.value.retry_after_s == pytest.approx(20.5)
            assert "used 2 of requests=2/30s" in held.value.message
    assert [e["event"] for e in logs] == ["tenant.limited"]  # once per hit, not per job
    assert logs[0]["tenant"] == "alpha" and logs[0]["frees_at"] == int(T0) + 30
    mark = json.loads(await backend.get(wire.tenant_held_key("alpha")))
    assert mark["metric"] == "requests" and mark["frees_at"] == int(T0) + 30
    # the held job's admission place went back to the others
    assert await backend.zrange(wire.admitted_key(TTS), 0, -1) == [b"b1"]


async def test_a_held_tenants_jobs_wait_with_the_reason(backend: ArqRedis) -> None:
    mark = {"reason": "tenant_limit: tenant alpha used 2 of requests=2/1d; the window frees at 9"}
    await backend.set(wire.tenant_held_key("alpha"), json.dumps(mark), ex=60)
    script = wire.enqueue_script()
    for job_id, tenant in (("a1", "alpha"), ("b1", "beta")):
        job = {"kind": "speech", "input": "hi", "tenant": tenant}
        assert await backend.eval(script, 4, *wire.enqueue_keys(job_id), job_id, json.dumps(job))
    # the held tenant's interactive job waits in its list; the other goes straight in
    assert await backend.zrange(wire.QUEUE_NAME, 0, -1) == [b"b1"]
    assert await backend.lrange(wire.wait_list_key(TTS, "alpha", "interactive"), 0, -1) == [b"a1"]
    report = (await job_status(backend, "a1")).to_dict()
    assert report["status"] == "queued" and report["waiting"] is True
    assert report["reason"] == mark["reason"]
    assert "reason" not in (await job_status(backend, "b1")).to_dict()
