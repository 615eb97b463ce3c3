"""``mimoq worker`` as a real process: SIGTERM drains it, and its logs are structured and secret-free.

Each test starts the worker as a subprocess against the private redis-server and the
simulator (whose latency faults make a job slow on purpose), and waits on real signals:
the simulator's in-flight count, the heartbeat record in Redis, the process exit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.core.logs import REDACTED
from mimoq.core.results import job_status, read_result
from mimoq.producer.client import Producer
from mimoq.sim.faults import Fault
from mimoq.sim.sim_server import RunningSim
from tests.conftest import RedisServer, free_port
from tests.e2e.conftest import API_KEY, WEBHOOK_SECRET, e2e_settings, running_worker
from tests.support.polling import eventually
from tests.support.receiver import Receiver

pytestmark = [pytest.mark.redis, pytest.mark.slow]

_RUN_CLI = "import sys; from mimoq.cli import main; sys.exit(main(sys.argv[1:]))"
_FOREIGN_ENV = ("MIMO_", "MIMOQ_", "XIAOMI_", "REDIS_URL")


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    output: Path  # stdout and stderr, interleaved

    def text(self) -> str:
        return self.output.read_text(encoding="utf-8")

    def records(self) -> list[dict[str, Any]]:
        """Every output line, parsed: the worker writes JSON lines when not on a terminal."""
        return [json.loads(line) for line in self.text().splitlines() if line.strip()]

    def wait(self, timeout_s: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"worker did not exit:\n{self.text()[-4000:]}") from None


@pytest.fixture
def spawn(redis_server: RedisServer, sim: RunningSim, tmp_path: Path) -> Iterator[Any]:
    started: list[WorkerProcess] = []

    def start(**env: str) -> WorkerProcess:
        values = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_ENV)}
        values.update({
            "REDIS_URL": redis_server.url,
            "MIMO_API_KEY": API_KEY,
            "MIMO_BASE_URL": sim.url,
            "MIMOQ_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "MIMOQ_DATA_DIR": str(tmp_path / "data"),
            "MIMOQ_INPUT_ROOTS": str(tmp_path),
            "MIMOQ_POLL_DELAY_S": "0.01",
            "MIMOQ_HEARTBEAT_INTERVAL_S": "0.1",
            "MIMOQ_METRICS_HOST": "127.0.0.1",
            "MIMOQ_METRICS_PORT": str(free_port()),
            "MIMOQ_BACKOFF_BASE_S": "0.01",
            "MIMOQ_BACKOFF_MAX_S": "0.05",
            # a 429 without Retry-After pauses the model 1/30 of the window: 0.1 s here
            "MIMOQ_LIMIT_WINDOW_S": "3",
            "MIMOQ_CALLBACK_ALLOW_NETWORKS": "127.0.0.0/8",
            "MIMOQ_CALLBACK_SCHEDULE_S": "0,0.05,0.1",
            "MIMOQ_LOG_LEVEL": "DEBUG",  # the most the worker ever says
        })  # fmt: skip
        values.update(env)
        output = tmp_path / f"worker-{len(started)}.log"
        with output.open("wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-c", _RUN_CLI, "worker"],
                env=values, stdout=sink, stderr=subprocess.STDOUT, cwd=tmp_path,
            )  # fmt: skip
        started.append(WorkerProcess(proc, output))
        return started[-1]

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait(10)


async def beat_of(redis: ArqRedis, worker: WorkerProcess) -> dict[str, Any] | None:
    """The (one) worker's heartbeat record; fails fast if the process died."""
    assert worker.proc.poll() is None, f"worker exited early:\n{worker.text()[-4000:]}"
    async for key in redis.scan_iter(match=wire.WORKER_HEARTBEAT_PREFIX + "*"):
        raw = await redis.get(key)
        if raw is not None:
            record: dict[str, Any] = json.loads(raw)
            return record
    return None


async def sim_received(sim: RunningSim) -> bool:
    # Counted on arrival, since the test's reset: a request abandoned by an earlier test
    # (still sleeping in the simulator) cannot be mistaken for this one.
    return int(sim.state.stats()["total_requests"]) >= 1


async def test_sigterm_lets_a_slow_job_finish_and_exits_0(
    redis: ArqRedis, spawn: Any, sim: RunningSim, receiver: Receiver, redis_server: RedisServer,
    tmp_path: Path,
) -> None:  # fmt: skip
    producer = Producer(redis, e2e_settings(redis_server, sim, tmp_path / "data"))
    sim.state.add_fault(Fault(kind="latency", ms=1500, match="a slow goodbye"))
    worker = spawn(MIMOQ_SHUTDOWN_GRACE_S="30")
    await eventually(lambda: beat_of(redis, worker), 60, "the worker's first heartbeat")
    slow = await producer.enqueue(
        {"kind": "speech", "input": "a slow goodbye", "callback": {"url": receiver.url()}}
    )
    await eventually(lambda: sim_received(sim), 60, "the slow call to reach MiMo")

    worker.proc.send_signal(signal.SIGTERM)
    draining = await eventually(
        lambda: _draining(redis, worker), 10, "the heartbeat to say it is draining"
    )
    late = await producer.enqueue({"kind": "speech", "input": "enqueued after SIGTERM"})
    code = worker.wait()

    assert code == 0, worker.text()[-4000:]
    assert draining["in_flight"] >= 1
    result = await read_result(redis, slow.job_id)
    assert result is not None and result.status == "succeeded" and result.output is not None
    assert Path(result.output.path or "").is_file()
    # It stopped taking jobs: the late one waits, queued, for the next worker. The slow job's
    # callback was part of its run (its first attempt is inline): delivered, nothing queued.
    assert (await job_status(redis, late.job_id)).status.value == "queued"
    assert await redis.zscore(wire.QUEUE_NAME, wire.callback_job_id(slow.job_id)) is None
    assert [r.json()["job_id"] for r in receiver.requests] == [slow.job_id]
    assert sim.state.stats()["total_requests"] == 1
    assert await beat_of_any(redis) is None  # a clean exit removes its heartbeat


async def _draining(redis: ArqRedis, worker: WorkerProcess) -> dict[str, Any] | None:
    record = await beat_of(redis, worker)
    return record if record is not None and record["draining"] else None


async def beat_of_any(redis: ArqRedis) -> list[bytes] | None:
    keys = [k async for k in redis.scan_iter(match=wire.WORKER_HEARTBEAT_PREFIX + "*")]
    return keys or None


async def test_a_job_past_the_grace_period_is_requeued_not_lost(
    redis: ArqRedis, spawn: Any, sim: RunningSim, redis_server: RedisServer, tmp_path: Path
) -> None:
    settings = e2e_settings(redis_server, sim, tmp_path / "data")
    producer = Producer(redis, settings)
    sim.state.add_fault(Fault(kind="latency", ms=2000, match="longer than the grace"))
    worker = spawn(MIMOQ_SHUTDOWN_GRACE_S="0.3")
    await eventually(lambda: beat_of(redis, worker), 60, "the worker's first heartbeat")
    job = await producer.enqueue({"kind": "speech", "input": "longer than the grace"})
    await eventually(lambda: sim_received(sim), 60, "the slow call to reach MiMo")

    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.text()[-4000:]

    assert await read_result(redis, job.job_id) is None
    assert await redis.zscore(wire.QUEUE_NAME, job.job_id) is not None  # back in the queue
    assert not await redis.exists(wire.in_progress_key(job.job_id))  # free for any worker
    async with running_worker(settings):  # the next worker finishes it
        result = await producer.wait(job.job_id, timeout_s=60)
    assert result.status == "succeeded"


async def test_logs_of_a_full_run_are_json_with_job_context_and_no_secrets(
    redis: ArqRedis, spawn: Any, sim: RunningSim, receiver: Receiver, redis_server: RedisServer,
    tmp_path: Path,
) -> None:  # fmt: skip
    producer = Producer(redis, e2e_settings(redis_server, sim, tmp_path / "data"))
    wav = tmp_path / "clip.wav"
    _speech_wav(wav, "heard words")
    sim.state.add_fault(Fault(kind="status", status=429, match="private words"))
    # 421 (content blocked): a permanent failure of the job itself (a 401 pauses the account).
    sim.state.add_fault(Fault(kind="status", status=421, match="refused words"))
    worker = spawn()
    await eventually(lambda: beat_of(redis, worker), 60, "the worker's first heartbeat")
    jobs = [
        await producer.enqueue({"kind": "speech", "input": "private words",
                                "callback": {"url": receiver.url("/hook?token=cb-token-123")}}),
        await producer.enqueue({"kind": "transcription", "file": str(wav),
                                "callback": {"url": receiver.url("/hook")}}),
        await producer.enqueue({"kind": "speech", "input": "refused words"}),
    ]  # fmt: skip
    results = [await producer.wait(j.job_id, timeout_s=60) for j in jobs]
    await eventually(lambda: len(receiver.requests) >= 2, 60, "both callbacks")
    await eventually(lambda: _callbacks_logged(worker), 60, "the callback attempts to be logged")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait() == 0

    assert [r.status for r in results] == ["succeeded", "succeeded", "failed"]
    text = worker.text()
    for secret in (API_KEY, WEBHOOK_SECRET, WEBHOOK_SECRET.removeprefix("whsec_"), "cb-token-123"):
        assert secret not in text
    assert REDACTED not in text  # nothing even tried to log a secret: the scrubber is a backstop
    assert "private words" not in text and "heard words" not in text  # no job payloads either
    records = worker.records()  # every line is JSON
    assert {"worker.started", "job.retrying", "job.succeeded", "callback.attempt"} <= {
        r["event"] for r in records
    }
    mimo_jobs = {j.job_id for j in jobs[:2]}
    # Lines logged inside the MiMo jobs (arq's wrapper lines are outside; callback lines
    # name the job they report on, but run in the delivery job).
    outside = {"arq.worker", "mimoq.callbacks"}
    inside = [r for r in records if r.get("job_id") in mimo_jobs and r["logger"] not in outside]
    assert inside and all({"job_try", "kind", "model"} <= set(r) for r in inside)
    assert {r["logger"] for r in inside} > {"mimoq.worker"}  # library lines inside jobs too
    arq_lines = [r for r in records if r["logger"] == "arq.worker" and "→" in r["event"]]
    assert {r.get("job_id") for r in arq_lines} >= mimo_jobs  # arq's own lines carry the id


def _callbacks_logged(worker: WorkerProcess) -> bool:
    events = [r for r in worker.records() if r["event"] == "callback.attempt"]
    return sum(1 for r in events if r.get("outcome") == "delivered") >= 2


def _speech_wav(path: Path, text: str) -> None:
    from mimoq.core.audio import WavFormat
    from mimoq.sim.audio_gen import wav_header_with_text

    samples = b"\x10\x00" * 16_000
    path.write_bytes(wav_header_with_text(WavFormat(16_000, 1, 16), len(samples), text) + samples)
