"""Tenant limits end to end: `mimoq serve`, two `mimoq worker` processes and the simulator.

alice may make 4 requests per 15 s window (MIMOQ_TENANT_LIMITS takes seconds windows for
exactly this: a test, or an operator's burst cap); bob has no limit. Both send two models
in both lanes at once. alice's calls stop at her limit and her other jobs wait (visible
with the reason over HTTP), nothing fails, bob runs on meanwhile, and alice's jobs finish
in the next windows. Then the usage totals are checked against the simulator's own count
of calls, audio seconds and characters (printed side by side: the measurement docs/usage.md
quotes).
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as sync_redis

from mimoq.core import wire
from mimoq.core.dialect_constants import ALL_MODELS
from mimoq.sim.sim_config import SimConfig
from mimoq.sim.sim_server import RunningSim, start_in_thread
from tests.conftest import RedisServer, free_port
from tests.http.conftest import API_KEY, stack_env, start_server, stop
from tests.support.cli import mimoq, mimoq_args
from tests.support.polling import wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ALICE, BOB = "tok-alice-limits-0123456789", "tok-bob-limits-0123456789ab"
#: 15 s: long enough for the checks made while alice is held (two `mimoq` processes, bob's
#: jobs) in the three quarters of a window left after its start; each window more costs a
#: window of waiting (30 s made this the suite's slowest test).
WINDOW_S, LIMIT = 15, 4
TTS, DESIGN, ASR = "mimo-v2.5-tts", "mimo-v2.5-tts-voicedesign", "mimo-v2.5-asr"


def wav_file(path: Path, seconds: float) -> Path:
    rate = 16_000
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(
            struct.pack("<h", int(6000 * math.sin(2 * math.pi * 330 * i / rate)))
            for i in range(int(seconds * rate))
        ))  # fmt: skip
    return path


def jobs(tenant: str, audio: Path) -> dict[str, dict[str, Any]]:
    """Two speech models in both lanes (and, for bob, transcriptions): what each tenant sends."""
    out: dict[str, dict[str, Any]] = {}
    for i in range(3):
        out[f"{tenant}-tts-{i}"] = {
            "kind": "speech", "input": f"Line {i} of {tenant}'s archive, read slowly.",
            "priority": "bulk", "tenant": tenant,
        }  # fmt: skip
        out[f"{tenant}-design-{i}"] = {
            "kind": "speech", "model": DESIGN, "input": f"Hello {i} from {tenant}.",
            "instructions": "a calm, low voice", "tenant": tenant,
        }  # fmt: skip
    if tenant == "bob":
        for i in range(2):
            out[f"bob-asr-{i}"] = {"kind": "transcription", "file": str(audio), "tenant": tenant}
    return out


@pytest.fixture
def sim() -> Iterator[RunningSim]:
    with start_in_thread(SimConfig(api_key=API_KEY, latency_median_ms=150)) as running:
        yield running


@pytest.fixture
def fleet(
    redis_server: RedisServer, sim: RunningSim, tmp_path: Path
) -> Iterator[tuple[str, dict[str, str], list[Path]]]:
    with sync_redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    env = stack_env(
        redis_server, sim, tmp_path / "data",
        MIMOQ_API_TOKENS=f"alice:{ALICE}, bob:{BOB}",
        MIMOQ_TENANT_LIMITS=f"alice:requests={LIMIT}/{WINDOW_S}s",
        MIMOQ_LIMITS_ENABLED="true", MIMOQ_LIMIT_WINDOW_S="2", MIMOQ_LIMIT_DEFAULT_RPM="40",
        MIMOQ_CONCURRENCY="1",
        MIMOQ_INPUT_ROOTS=str(tmp_path), MIMOQ_SHUTDOWN_GRACE_S="1",
    )  # fmt: skip
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    workers = []
    for log in logs:
        with log.open("wb") as sink:
            workers.append(subprocess.Popen(
                mimoq_args("worker", "--metrics-port", "0"), env=env, cwd=tmp_path,
                stdout=sink, stderr=subprocess.STDOUT,
            ))  # fmt: skip
    port = free_port()
    server = start_server(env, tmp_path, port)
    try:
        yield f"http://127.0.0.1:{port}", env, logs
    finally:
        stop(server)
        for worker in workers:
            stop(worker)


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[sync_redis.Redis]:
    with sync_redis.Redis.from_url(redis_server.url) as client:
        yield client


@pytest.fixture
def alice(fleet: tuple[str, dict[str, str], list[Path]]) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {ALICE}"}
    with httpx.Client(base_url=fleet[0], headers=headers, timeout=30) as client:
        yield client


def result(redis: sync_redis.Redis, job_id: str) -> dict[str, Any] | None:
    raw = redis.get(wire.result_key(job_id))
    return None if raw is None else dict(json.loads(raw))


def test_a_tenant_at_its_limit_waits_and_the_other_runs_on(
    store: sync_redis.Redis,
    alice: httpx.Client,
    sim: RunningSim,
    fleet: tuple[str, dict[str, str], list[Path]],
    tmp_path: Path,
) -> None:
    _, env, logs = fleet
    redis = store
    audio = wav_file(tmp_path / "clip.wav", 2.0)
    sent = {**jobs("alice", audio), **jobs("bob", audio)}
    # Start early in a window (a clock condition, not a sleep), so that alice's first
    # window still has most of its 30 s to run once she reaches her limit.
    wait_until(lambda: time.time() % WINDOW_S < WINDOW_S / 4, timeout_s=WINDOW_S + 5,
               what="the start of a limit window")  # fmt: skip
    sha = redis.script_load(wire.enqueue_script())
    for job_id, job in sent.items():  # a foreign producer: raw EVALSHA of the wire contract
        assert redis.evalsha(sha, 4, *wire.enqueue_keys(job_id), job_id, json.dumps(job)) == 1

    bob_ids = [j for j in sent if j.startswith("bob")]
    alice_ids = [j for j in sent if j.startswith("alice")]
    # alice reaches her limit: held, and her other jobs say why they wait
    wait_until(lambda: alice.get("/v1/usage").json()["held"].get("alice"), timeout_s=60,
               what="alice to be held at her limit")  # fmt: skip
    usage = alice.get("/v1/usage").json()
    assert usage["tenant"] == "alice" and {r["tenant"] for r in usage["usage"]} == {"alice"}
    (limit,) = usage["limits"]
    assert limit["held"] and limit["metric"] == "requests" and limit["window_s"] == WINDOW_S
    frees_at = limit["frees_at"]
    waiting = [j for j in alice_ids if result(redis, j) is None]
    assert len(waiting) >= len(alice_ids) - LIMIT - 1  # overshoot: the other worker's call
    inspected = json.loads(mimoq("inspect", "--json", env=env, cwd=tmp_path).stdout)
    held = [(h["tenant"], h["frees_at"]) for h in inspected["tenants_held"]]
    assert held == [("alice", frees_at)], (held, time.time(), frees_at)
    # a request alice sends now waits too, and GET /v1/jobs/{id} says why
    accepted = alice.post(
        "/v1/audio/speech", json={"model": TTS, "input": "One more, please.", "voice": "Mia"},
        headers={"Prefer": "respond-async"},
    )  # fmt: skip
    assert accepted.status_code == 202, accepted.text
    http_id = accepted.json()["id"]
    alice_ids.append(http_id)
    shown = alice.get(f"/v1/jobs/{http_id}").json()
    assert shown["status"] == "queued" and shown["waiting"] is True
    assert shown["reason"].startswith("tenant_limit: tenant alice used ")
    status = mimoq("status", waiting[-1], env=env, cwd=tmp_path)
    report = json.loads(status.stdout)
    assert report["waiting"] is True and "tenant_limit: tenant alice" in report["reason"]
    # bob runs on while alice is held: all his jobs finish inside alice's window
    wait_until(lambda: all(result(redis, j) for j in bob_ids), timeout_s=60, what="bob's jobs")
    bob_done = [result(redis, j) for j in bob_ids]
    assert {r["status"] for r in bob_done if r} == {"succeeded"}
    assert max(r["finished_at"] for r in bob_done if r) < frees_at
    assert alice.get("/v1/usage").json()["held"].get("alice")
    # alice's jobs run in the next windows; nothing failed
    wait_until(lambda: all(result(redis, j) for j in alice_ids), timeout_s=3 * WINDOW_S + 30,
               what="alice's jobs in the next windows")  # fmt: skip
    assert {result(redis, j)["status"] for j in alice_ids} == {"succeeded"}  # type: ignore[index]
    # at most her limit plus the call already in flight, in any one of her windows
    per_window = [
        sum(float(v or 0) for v in redis.hmget(key, [f"alice|{m}|requests" for m in ALL_MODELS]))
        for key in redis.scan_iter(f"{wire.USAGE_PREFIX}{WINDOW_S}:*")
    ]
    assert sum(per_window) == len(alice_ids) and max(per_window) <= LIMIT + 1, per_window
    # one tenant.limited line per hit, not one per held job
    lines = [ln for log in logs for ln in log.read_text().splitlines() if "tenant.limited" in ln]
    assert 1 <= len(lines) <= len(per_window) - 1, lines
    compare_with_simulator(env, tmp_path, sim)


def compare_with_simulator(env: dict[str, str], cwd: Path, sim: RunningSim) -> None:
    """Usage totals (``mimoq usage --json``) against the simulator's own counters."""
    done = mimoq("usage", "--since", "1h", "--json", env=env, cwd=cwd)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["usage"]
    stats = sim.state.stats()
    print("\nmodel                      requests (usage / sim)  audio_out_s (usage / sim)  "
          "audio_in_s (usage / sim)  chars (usage / sim)")  # fmt: skip
    for model in (TTS, DESIGN, ASR):
        mine = [r for r in rows if r["model"] == model]
        ours = {m: sum(r[m] for r in mine) for m in ("requests", "audio_out_s", "audio_in_s",
                                                      "chars")}  # fmt: skip
        theirs = {
            "requests": stats["requests"].get(model, 0),
            "audio_out_s": stats["audio_out_s"].get(model, 0.0),
            "audio_in_s": stats["audio_in_s"].get(model, 0.0),
            "chars": stats["chars"].get(model, 0),
        }
        print(f"{model:26} {ours['requests']:>8} / {theirs['requests']:<8}  "
              f"{ours['audio_out_s']:>10.3f} / {theirs['audio_out_s']:<10.3f}  "
              f"{ours['audio_in_s']:>9.3f} / {theirs['audio_in_s']:<9.3f}  "
              f"{ours['chars']:>6} / {theirs['chars']}")  # fmt: skip
        assert ours["requests"] == theirs["requests"] > 0
        assert ours["chars"] == theirs["chars"]
        assert ours["audio_out_s"] == pytest.approx(theirs["audio_out_s"], abs=0.01)
        assert ours["audio_in_s"] == pytest.approx(theirs["audio_in_s"], abs=0.01)
