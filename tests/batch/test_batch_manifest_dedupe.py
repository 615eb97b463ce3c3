"""A JSONL manifest naming one recording three times (issue 19, item 2): twice with the same
parameters under two ``output`` keys (one job, one call, two outputs), once in another
language (another job). ``mimoq batch`` as people run it, with the default limits, in the
embedded default and with a shared redis-server and a separate worker."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from mimoq.core.connections import embedded
from mimoq.core.settings import Settings
from mimoq.producer.batch_plan import PlannedItem
from mimoq.producer.batch_run import BatchRunner
from mimoq.producer.batch_state import RunFiles
from mimoq.producer.client import Enqueued, Producer
from mimoq.sim.sim_server import RunningSim
from tests.batch.conftest import batch_env, sim_stats
from tests.conftest import RedisServer
from tests.e2e.test_pipeline import speech_wav
from tests.support.cli import mimoq, mimoq_args

pytestmark = pytest.mark.slow
#: Far more than the run needs (a few seconds); the hang it guards against was forever.
DEADLINE_S = 60


def manifest(root: Path) -> Path:
    speech_wav(root / "call.wav", "same words", seconds=0.2)
    lines = [
        {"kind": "transcription", "file": "call.wav", "language": "en", "output": "out/one.json"},
        {"kind": "transcription", "file": "call.wav", "language": "en", "output": "out/two.json"},
        {"kind": "transcription", "file": "call.wav", "language": "zh", "output": "out/zh.json"},
    ]
    path = root / "dedupe.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def issue_env(sim: RunningSim, data: Path, **extra: str) -> dict[str, str]:
    """As the report ran it: the default limits (the fixtures' env turns them off)."""
    env = batch_env(sim, data, **extra)
    del env["MIMOQ_LIMITS_ENABLED"]
    return env


@pytest.fixture
def shared_redis_worker(
    sim: RunningSim, tmp_path: Path, redis_server: RedisServer
) -> Iterator[dict[str, str]]:
    """A worker process on a private redis-server; the batch gets the same environment."""
    env = issue_env(sim, tmp_path / "data", REDIS_URL=redis_server.url)
    worker = subprocess.Popen(
        mimoq_args("worker"), env=env, cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield env
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)


def check_run(done: subprocess.CompletedProcess[str], sim: RunningSim, data: Path) -> None:
    assert done.returncode == 0, done.stderr
    out = data / "out"
    one, two, zh = (json.loads((out / name).read_text()) for name in ("one.json", "two.json", "zh.json"))  # fmt: skip
    assert one == two == zh == {"text": "same words"}
    assert int(sim_stats(sim)["requests"]["mimo-v2.5-asr"]) == 2  # en once for two outputs, zh
    assert "1 item(s) repeat another item's content" in done.stderr
    rows = [json.loads(line) for line in next(data.glob("batches/*/report.jsonl")).read_text().splitlines()]  # fmt: skip
    assert [r["status"] for r in rows] == ["succeeded"] * 3
    assert rows[0]["job_id"] == rows[1]["job_id"] != rows[2]["job_id"]


def test_embedded_default(sim: RunningSim, tmp_path: Path) -> None:
    source, data = manifest(tmp_path), tmp_path / "data"
    done = mimoq(
        "batch", str(source), "--progress", "none",
        env=issue_env(sim, data), cwd=tmp_path, timeout=DEADLINE_S,
    )  # fmt: skip
    check_run(done, sim, data)


@pytest.mark.redis
def test_shared_redis_and_a_worker(
    sim: RunningSim, tmp_path: Path, shared_redis_worker: dict[str, str]
) -> None:
    source, data = manifest(tmp_path), tmp_path / "data"
    done = mimoq(
        "batch", str(source), "--progress", "none",
        env=shared_redis_worker, cwd=tmp_path, timeout=DEADLINE_S,
    )  # fmt: skip
    check_run(done, sim, data)


class _RedisGoneForOneJob(Producer):
    """Enqueues as usual, except that Redis fails for the job in ``language`` zh."""

    async def enqueue(self, job: Any, *, defer_s: float = 0.0) -> Enqueued:
        if job.get("language") == "zh":
            raise RedisConnectionError("Redis went away")
        return await super().enqueue(job, defer_s=defer_s)


async def test_a_run_whose_enqueueing_failed_ends_with_the_error(tmp_path: Path) -> None:
    """Nothing more will be enqueued: the run says why instead of waiting forever for the
    job it never enqueued (the other job stays queued: no worker here)."""
    redis = embedded()
    files = RunFiles(tmp_path, "broken-run")
    items = [
        PlannedItem(f"line {n}", {"kind": "speech", "input": "hi", "language": lang,
                                  "id": f"s-{lang}", "output": f"out/{lang}.wav"})
        for n, lang in enumerate(("en", "zh"), 1)
    ]  # fmt: skip
    runner = BatchRunner(_RedisGoneForOneJob(redis, Settings()), files, items, poll_s=0.01)
    try:
        with pytest.raises(RedisConnectionError, match="Redis went away"):
            await asyncio.wait_for(runner.run(), DEADLINE_S)
    finally:
        await redis.aclose()
    assert files.path("report.jsonl").is_file()  # the reports are written either way
