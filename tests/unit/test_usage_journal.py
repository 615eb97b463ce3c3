"""The usage journal (core/usage_journal.py): a job's usage pushed with its result, folded
into the windows in batches exactly once, and counted by reports before and after."""

from __future__ import annotations

import asyncio
import json

import pytest
import structlog
from arq.connections import ArqRedis

from mimoq.core import usage_journal, wire
from mimoq.core.jobs import JobResult
from mimoq.core.results import write_result_safely
from mimoq.core.settings import Settings
from mimoq.core.tenant_limits import DAY_S, HOUR_S
from mimoq.core.usage_windows import UsageEntry, UsageWrite, read_span
from mimoq.worker.tenant_usage import usage_write
from mimoq.worker.usage_folding import UsageFolder
from tests.conftest import free_port

T0 = 1_765_000_800.0  # a whole hour
TTS, ASR = "mimo-v2.5-tts", "mimo-v2.5-asr"
WINDOWS = (HOUR_S, DAY_S)
SPEECH = {"requests": 1, "audio_out_s": 2.5, "chars": 12, "tokens": 30}


async def push(
    redis: ArqRedis, tenant: str, model: str, amounts: dict[str, float], at: float
) -> None:
    """One finished job's usage, written as the worker writes it (with a result record)."""
    write = UsageWrite(UsageEntry(tenant, model, amounts), WINDOWS, at, journal=True)
    result = JobResult(id=f"j{at}", kind="speech", status="succeeded", model=model, finished_at=at)
    await write_result_safely(redis, result, ttl_s=60, usage=write)


async def report(redis: ArqRedis, since_s: int = DAY_S) -> list[dict[str, object]]:
    return (await read_span(redis, since_s=since_s, now=T0 + 10)).to_list(totals=True)


async def test_journaled_usage_is_reported_before_and_after_its_fold(backend: ArqRedis) -> None:
    for i in range(3):
        await push(backend, "alpha", TTS, SPEECH, T0 + i)
    await push(backend, "beta", ASR, {"requests": 1, "audio_in_s": 4.0}, T0)
    # nothing is in the windows yet: one push a job
    assert await backend.llen(wire.USAGE_JOURNAL_KEY) == 4
    assert not await backend.exists(wire.usage_key(HOUR_S, int(T0)))
    before = await report(backend)
    alpha = next(r for r in before if r["tenant"] == "alpha" and r["model"] == TTS)
    assert (alpha["requests"], alpha["audio_s"], alpha["chars"], alpha["tokens"]) == (
        3,
        7.5,
        36,
        90,
    )

    assert await usage_journal.fold(backend) == 4
    assert await backend.llen(wire.USAGE_JOURNAL_KEY) == 0
    assert await report(backend) == before  # the same totals, now from the windows alone
    fields = await backend.hgetall(wire.usage_key(HOUR_S, int(T0)))
    assert float(fields[b"alpha|mimo-v2.5-tts|requests"]) == 3
    # each window's hash got its TTL with its first field: the hour's serves a week's reports
    assert 8 * DAY_S < await backend.ttl(wire.usage_key(HOUR_S, int(T0))) <= 8 * DAY_S + HOUR_S
    assert await backend.ttl(wire.usage_key(DAY_S, int(T0 // DAY_S * DAY_S))) > 400 * DAY_S


async def test_two_workers_folding_at_once_add_a_batch_once(backend: ArqRedis) -> None:
    for i in range(5):
        await push(backend, "alpha", TTS, {"requests": 1}, T0 + i)
    # both read the same head before either calls its script
    results = await asyncio.gather(
        usage_journal.fold_batch(backend), usage_journal.fold_batch(backend)
    )
    assert sorted(folded for folded, _ in results) == [0, 5]
    # and a fold that finds it gone adds nothing
    assert await usage_journal.fold(backend) == 0
    fields = await backend.hgetall(wire.usage_key(HOUR_S, int(T0)))
    assert fields == {b"alpha|mimo-v2.5-tts|requests": b"5"}


async def test_a_fold_leaves_what_was_pushed_after_its_read(backend: ArqRedis) -> None:
    for i in range(3):
        await push(backend, "alpha", TTS, {"requests": 1}, T0 + i)
    assert await usage_journal.fold_batch(backend, batch=2) == (2, 2)
    await push(backend, "alpha", TTS, {"requests": 1}, T0 + 5)
    assert await backend.llen(wire.USAGE_JOURNAL_KEY) == 2
    assert next(r for r in await report(backend) if r["model"] == TTS)["requests"] == 4
    assert await usage_journal.fold(backend) == 2
    assert next(r for r in await report(backend) if r["model"] == TTS)["requests"] == 4


@pytest.mark.parametrize(
    "foreign",
    [
        b"not json",
        b"[1, 2]",
        json.dumps({"p": "alpha|mimo-v2.5-tts|", "w": [10**9], "t": T0, "a": {"requests": 1}}),
        json.dumps({"p": "alpha|mimo-v2.5-tts|", "w": [3600], "t": T0, "a": {"requests": -5}}),
        json.dumps({"p": "alpha|mimo-v2.5-tts|", "w": [3600], "t": T0, "a": {"bogus": 1}}),
        json.dumps({"p": "a|b|c|", "w": [3600], "t": T0, "a": {"requests": 1}}),
        json.dumps({"p": "alpha|mimo-v2.5-tts|", "w": [3600], "t": "soon", "a": {"requests": 1}}),
        json.dumps({"p": "alpha|mimo-v2.5-tts|", "w": [True], "t": T0, "a": {"requests": 1}}),
    ],
)
async def test_a_foreign_entry_is_dropped_and_stalls_nothing(
    backend: ArqRedis, foreign: str | bytes
) -> None:
    await push(backend, "alpha", TTS, {"requests": 1}, T0)
    await backend.rpush(wire.USAGE_JOURNAL_KEY, foreign)
    await push(backend, "alpha", TTS, {"requests": 1}, T0 + 1)
    assert next(r for r in await report(backend) if r["model"] == TTS)["requests"] == 2
    assert await usage_journal.fold(backend) == 3
    assert await backend.llen(wire.USAGE_JOURNAL_KEY) == 0
    assert await backend.hgetall(wire.usage_key(HOUR_S, int(T0))) == {
        b"alpha|mimo-v2.5-tts|requests": b"2"
    }
    assert await report(backend) == [
        {"tenant": "alpha", "model": model, "requests": 2, "failed": 0, "audio_s": 0.0,
         "audio_in_s": 0.0, "audio_out_s": 0.0, "chars": 0, "tokens": 0}
        for model in ("*", TTS)
    ]  # fmt: skip


async def test_the_push_that_makes_a_batch_folds_it(backend: ArqRedis) -> None:
    filler = usage_journal.entry_text("alpha|mimo-v2.5-tts|", WINDOWS, T0, {"requests": 1.0})
    await backend.rpush(wire.USAGE_JOURNAL_KEY, *[filler] * (usage_journal.FOLD_EVERY - 2))
    await push(backend, "alpha", TTS, {"requests": 1}, T0)
    assert await backend.llen(wire.USAGE_JOURNAL_KEY) == usage_journal.FOLD_EVERY - 1
    await push(backend, "alpha", TTS, {"requests": 1}, T0)  # the FOLD_EVERY-th
    assert await backend.llen(wire.USAGE_JOURNAL_KEY) == 0
    fields = await backend.hgetall(wire.usage_key(HOUR_S, int(T0)))
    assert fields == {b"alpha|mimo-v2.5-tts|requests": str(usage_journal.FOLD_EVERY).encode()}


async def test_a_fold_after_a_script_flush_loads_its_script(backend: ArqRedis) -> None:
    await push(backend, "alpha", TTS, {"requests": 1}, T0)
    await backend.script_flush()  # Redis restarted: the script must be loaded again
    assert await usage_journal.fold(backend) == 1


async def test_a_report_counts_the_journal_in_the_windows_it_spans(backend: ArqRedis) -> None:
    await push(backend, "alpha", TTS, {"requests": 1}, T0 - 2 * HOUR_S)  # two hours ago
    await push(backend, "alpha", TTS, {"requests": 1}, T0 + 5)
    hour = await report(backend, since_s=HOUR_S)
    assert next(r for r in hour if r["model"] == TTS)["requests"] == 1
    day = await report(backend, since_s=DAY_S)
    assert next(r for r in day if r["model"] == TTS)["requests"] == 2


def test_a_tenant_with_limits_is_added_at_once_and_others_journaled() -> None:
    settings = Settings(usage={"tenant_limits": "alpha:requests=5/1h"})
    limited = usage_write(UsageEntry("alpha", TTS, {"requests": 1}), settings)
    other = usage_write(UsageEntry("beta", TTS, {"requests": 1}), settings)
    assert (limited.journal, other.journal) == (False, True)
    # every window the limits need is kept, journaled or not
    assert other.windows == limited.windows and HOUR_S in other.windows


async def test_a_worker_folds_once_an_interval_from_its_start(backend: ArqRedis) -> None:
    clock = [100.0]
    folder = UsageFolder(10.0, monotonic=lambda: clock[0])
    await push(backend, "alpha", TTS, {"requests": 1}, T0)
    await folder.tick(backend)  # just started: the first fold is an interval away
    assert await backend.llen(wire.USAGE_JOURNAL_KEY) == 1
    clock[0] = 110.0
    await folder.tick(backend)
    assert await backend.llen(wire.USAGE_JOURNAL_KEY) == 0
    await push(backend, "alpha", TTS, {"requests": 1}, T0)
    clock[0] = 119.0
    await folder.tick(backend)
    assert await backend.llen(wire.USAGE_JOURNAL_KEY) == 1
    clock[0] = 120.0
    await folder.tick(backend)
    assert await backend.llen(wire.USAGE_JOURNAL_KEY) == 0


async def test_a_fold_without_redis_is_logged_and_left_for_later() -> None:
    gone = ArqRedis.from_url(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens
    try:
        with structlog.testing.capture_logs() as logs:
            assert await usage_journal.fold_quietly(gone) == 0
    finally:
        await gone.aclose()
    assert [e["event"] for e in logs] == ["usage.fold_failed"]
