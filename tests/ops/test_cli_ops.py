"""``mimoq health`` and ``mimoq inspect`` against a known Redis state (private redis-server)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest
from arq.connections import ArqRedis

from mimoq.cli import main
from mimoq.cli.inspection import render
from mimoq.core import deadletters, failures, wire
from mimoq.core.deadletters import DeadLetter, DeadLetterReason
from mimoq.core.jobs import JobResult
from mimoq.core.webhooks import Delivery
from mimoq.worker.depth import job_kind_and_lane
from tests.conftest import RedisServer

pytestmark = [pytest.mark.redis]


@pytest.fixture(autouse=True)
def redis_url(monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    """The command as a user runs it (its own asyncio.run, so off this test's loop)."""
    code = await asyncio.to_thread(main, list(argv))
    return code, json.loads(capsys.readouterr().out)


def beat(worker_id: str, *, age_s: float, host: str = "host-a", draining: bool = False) -> str:
    return json.dumps({
        "worker_id": worker_id, "host": host, "pid": 7, "started_at": time.time() - 100,
        "beat_at": time.time() - age_s, "interval_s": 10.0, "ttl_s": 30.0, "concurrency": 8,
        "draining": draining,
    })  # fmt: skip


@pytest.mark.parametrize(
    ("records", "argv", "code", "live"),
    [
        ({}, [], 1, 0),  # no worker has ever beaten
        ({"w1": {"age_s": 1}}, [], 0, 1),
        ({"w1": {"age_s": 45}}, [], 1, 0),  # beat longer ago than its TTL: hung or dead
        ({"w1": {"age_s": 1, "draining": True}}, [], 1, 0),  # shutting down
        ({"w1": {"age_s": 1}, "w2": {"age_s": 45}}, ["--min-workers", "2"], 1, 1),
        ({"w1": {"age_s": 1}, "w2": {"age_s": 2}}, ["--min-workers", "2"], 0, 2),
        ({"w1": {"age_s": 8}}, ["--max-age-s", "5"], 1, 0),
        ({"w1": {"age_s": 1, "host": "host-b"}}, ["--host", "host-a"], 1, 0),
        ({"w1": {"age_s": 1, "host": "host-b"}}, ["--host", "host-b"], 0, 1),
    ],
)
async def test_health(
    redis: ArqRedis,
    capsys: pytest.CaptureFixture[str],
    records: dict[str, dict[str, Any]],
    argv: list[str],
    code: int,
    live: int,
) -> None:
    for worker_id, fields in records.items():
        await redis.set(wire.WORKER_HEARTBEAT_PREFIX + worker_id, beat(worker_id, **fields))
    got_code, report = await run_cli(capsys, "health", *argv)
    assert (got_code, report["live"], report["healthy"]) == (code, live, code == 0)
    assert {w["worker_id"] for w in report["workers"]} <= set(records)


async def test_health_without_redis_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket_closed_port() as port:
        monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{port}/0")
        code, report = await run_cli(capsys, "health")
    assert code == 1 and report["healthy"] is False and "ConnectionError" in report["error"]


class socket_closed_port:
    """A loopback port with nothing listening on it (bound, never listened)."""

    def __enter__(self) -> int:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        return int(self._sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self._sock.close()


@pytest.mark.parametrize(
    ("raw", "kind", "lane"),
    [
        (None, "expired", "none"),
        (b'{"f": "speech", "k": {}}', "speech", "interactive"),
        (b'{"f": "transcription"}', "transcription", "interactive"),
        (b'{"f": "speech", "k": {"job": {"priority": "bulk"}}}', "speech", "bulk"),
        (b'{"f": "speech", "k": {"job": {"priority": "nonsense"}}}', "speech", "interactive"),
        (b'{"f": "deliver_callback"}', "callback", "none"),
        (b'{"f": "invalid_job"}', "invalid", "none"),
        (b'{"f": "someone_elses_task"}', "other", "none"),
        (b'{"f": 3}', "other", "none"),
        (b"[1, 2]", "other", "none"),
        (b"\x80\x04pickle", "other", "none"),
    ],
)
def test_kind_and_lane_of_a_job_record(raw: bytes | None, kind: str, lane: str) -> None:
    assert job_kind_and_lane(raw) == (kind, lane)


async def known_state(redis: ArqRedis) -> None:
    """3 speech due, 1 speech + 1 transcription deferred, 1 callback due, 1 expired; 2 running."""
    now_ms = int(time.time() * 1000)
    jobs = {
        "s1": ("speech", now_ms - 3000), "s2": ("speech", now_ms - 2000),
        "s3": ("speech", now_ms - 1000), "s4": ("speech", now_ms + 60_000),
        "t1": ("transcription", now_ms + 30_000), "cb-x": ("deliver_callback", now_ms - 10),
    }  # fmt: skip
    for job_id, (task, score) in jobs.items():
        await redis.set(wire.job_key(job_id), json.dumps({"f": task, "a": [], "k": {}}))
        await redis.zadd(wire.QUEUE_NAME, {job_id: score})
    await redis.zadd(wire.QUEUE_NAME, {"gone": now_ms - 500})  # its job key expired
    await redis.set(wire.ARQ_RETRY_PREFIX + "t1", 3)
    await redis.set(wire.DEFERRALS_PREFIX + "t1", 2)
    for job_id, task in (("r1", "speech"), ("r2", "transcription")):
        await redis.set(wire.job_key(job_id), json.dumps({"f": task, "a": [], "k": {}}))
        await redis.set(wire.in_progress_key(job_id), b"1", px=60_000)
    await redis.set(wire.ARQ_RETRY_PREFIX + "r2", 2)
    for n in range(3):
        status = "failed" if n < 2 else "succeeded"
        error = {"type": "authentication_error", "message": f"bad key {n}", "status": 401}
        await failures.push(redis, JobResult(
            id=f"f{n}", kind="speech", status=status, model="mimo-v2.5-tts",
            error=error if status == "failed" else None, tries=1, finished_at=1000.0 + n,
        ), ttl_s=86_400)  # fmt: skip
    delivery = Delivery(
        delivery_id="cb-dead", job_id="dead", url="https://hooks.example/path?token=secret",
        body="{}", created_at=1.0,
    )  # fmt: skip
    await deadletters.put(redis, DeadLetter(
        delivery=delivery, reason=DeadLetterReason.gone, attempts=3, last_status=410,
        dead_at=time.time() - 5,
    ), ttl_s=86_400)  # fmt: skip
    await redis.set(wire.WORKER_HEARTBEAT_PREFIX + "w1", beat("w1", age_s=1))


async def test_inspect_counts_match_a_known_queue(
    redis: ArqRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    await known_state(redis)
    await redis.config_resetstat()
    code, report = await run_cli(capsys, "inspect", "--json", "--limit", "5")
    assert code == 0
    assert report["queue"]["due"] == {"callback": 1, "expired": 1, "speech": 3}
    assert report["queue"]["deferred"] == {"speech": 1, "transcription": 1}
    # every job not finished: the 7 in the queue and the 2 in flight
    assert report["queue"]["total"] == 9
    assert report["queue"]["by_state"] == {"queued": 5, "waiting": 0, "deferred": 2, "in_flight": 2}
    assert [(d["id"], d["kind"], d["tries_started"], d["limiter_deferrals"])
            for d in report["deferred"]] == [("t1", "transcription", 3, 2), ("s4", "speech", 0, 0)]  # fmt: skip
    assert 25 < report["deferred"][0]["in_s"] <= 30
    flight = report["in_flight"]
    assert flight["count"] == 2 and flight["by_kind"] == {"speech": 1, "transcription": 1}
    assert flight["jobs"] == [
        {"id": "r1", "kind": "speech", "try": 0}, {"id": "r2", "kind": "transcription", "try": 2},
    ]  # fmt: skip
    assert report["failures"]["kept"] == 2
    assert [f["id"] for f in report["failures"]["recent"]] == ["f1", "f0"]  # newest first
    assert report["failures"]["recent"][0]["message"] == "bad key 1"
    dead = report["dead_letters"]
    assert dead["count"] == 1 and dead["newest"][0]["reason"] == "gone"
    assert "secret" not in json.dumps(dead)  # the URL's query is redacted in summaries
    assert report["workers"]["live"] == 1
    assert report["limiters"]["enabled"] is True
    # 7 queued jobs the limiters hold no ticket for: demand of 7 slots, one worker of 32
    assert report["desired_workers"]["jobs"] == 7
    assert report["desired_workers"]["workers"] == 1
    assert {s["model"] for s in report["limiters"]["limiters"]} >= {
        "mimo-v2.5-tts",
        "mimo-v2.5-asr",
    }
    stats = await redis.info("commandstats")
    assert "cmdstat_keys" not in stats  # SCAN family only
    assert "cmdstat_scan" in stats and "cmdstat_zscan" in stats


async def test_inspect_limit_bounds_every_list(
    redis: ArqRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    await known_state(redis)
    _, report = await run_cli(capsys, "inspect", "--json", "--limit", "1")
    assert len(report["deferred"]) == len(report["in_flight"]["jobs"]) == 1
    assert len(report["failures"]["recent"]) == len(report["dead_letters"]["newest"]) == 1
    assert report["in_flight"]["count"] == 2  # counts are never cut by the limit


async def test_inspect_counts_past_one_page(
    redis: ArqRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    now_ms = int(time.time() * 1000)
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(1_200):
            task = "speech" if i % 3 else "transcription"
            pipe.set(wire.job_key(f"j{i}"), json.dumps({"f": task}))
            pipe.zadd(wire.QUEUE_NAME, {f"j{i}": now_ms - i})
        await pipe.execute()
    _, report = await run_cli(capsys, "inspect", "--json")
    assert report["queue"]["due"] == {"speech": 800, "transcription": 400}


async def test_table_for_a_terminal(redis: ArqRedis, capsys: pytest.CaptureFixture[str]) -> None:
    await known_state(redis)
    _, report = await run_cli(capsys, "inspect", "--json")
    table = render(report)
    assert "queue (9 jobs not finished)" in table and "in flight (2)" in table
    assert "recent failures (2 kept)" in table and "dead letters (1)" in table
    rows = [line.split() for line in table.splitlines()]
    assert ["queued", "interactive", "speech", "3"] in rows
    assert ["deferred", "interactive", "speech", "1"] in rows
    assert ["in_flight", "interactive", "transcription", "1"] in rows


async def test_inspect_counts_interactive_jobs_past_the_admission_cap(
    redis: ArqRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    """#19: 21 interactive jobs of one tenant, no worker: 16 queued, 5 waiting for admission
    (mimoq:wait:<model>:interactive:tenant:<t>), and all 21 counted as not finished."""
    script = redis.register_script(wire.enqueue_script())
    flood = wire.INTERACTIVE_DIRECT + 5
    for i in range(flood):
        job = json.dumps({"kind": "speech", "input": "x", "tenant": "alpha"})
        assert await script(keys=wire.enqueue_keys(f"i{i}"), args=[f"i{i}", job]) == 1
    for i in range(3):  # and bulk work of another tenant: one admitted at once, two waiting
        job = json.dumps({"kind": "transcription", "file": "a.wav", "priority": "bulk",
                          "tenant": "beta"})  # fmt: skip
        assert await script(keys=wire.enqueue_keys(f"b{i}"), args=[f"b{i}", job]) == 1
    _, report = await run_cli(capsys, "inspect", "--json")
    queue = report["queue"]
    assert queue["total"] == flood + 3
    assert queue["by_state"] == {"queued": 17, "waiting": 7, "deferred": 0, "in_flight": 0}
    assert {(r["state"], r["lane"], r["kind"]): r["count"] for r in queue["depth"]} == {
        ("queued", "interactive", "speech"): 16,
        ("waiting", "interactive", "speech"): 5,
        ("queued", "bulk", "transcription"): 1,
        ("waiting", "bulk", "transcription"): 2,
    }
    assert report["waiting_interactive"] == {"mimo-v2.5-tts": {"alpha": 5}}
