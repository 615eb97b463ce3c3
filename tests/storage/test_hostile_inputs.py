"""A foreign producer writing raw jobs into Redis cannot make a worker read outside its roots.

Real redis-server, the simulator as MiMo, a real worker; the hostile jobs go in at once,
next to honest ones, and every one gets a clean result while the worker carries on.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.core.settings import Settings
from mimoq.producer.client import Producer
from mimoq.sim.sim_server import RunningSim
from mimoq.worker.arq_worker import MimoqWorker
from tests.e2e.test_pipeline import speech_wav
from tests.support.cli import clean_env, mimoq

pytestmark = [pytest.mark.redis, pytest.mark.slow]


async def _raw(redis: ArqRedis, job_id: str, job: dict[str, object]) -> None:
    """Enqueue as a producer in another language would: the script, no validation."""
    await redis.eval(wire.enqueue_script(), 4, *wire.enqueue_keys(job_id), job_id, json.dumps(job))


async def test_escapes_fifos_and_symlinks_fail_cleanly_while_honest_jobs_run(
    redis: ArqRedis, producer: Producer, worker: MimoqWorker, settings: Settings, tmp_path: Path
) -> None:
    data = settings.storage.data_dir
    data.mkdir(parents=True, exist_ok=True)
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    speech_wav(outside / "private.wav", "private words")
    (tmp_path / "passwd.wav").symlink_to("/etc/passwd")  # inside the roots, pointing out
    (data / "link.wav").symlink_to(outside / "private.wav")
    os.mkfifo(tmp_path / "pipe.wav")
    good = speech_wav(tmp_path / "good.wav", "honest words")
    hostile = {
        "abs": {"kind": "transcription", "file": str(outside / "private.wav")},
        "uri": {"kind": "transcription", "file": (outside / "private.wav").as_uri()},
        "dots": {"kind": "transcription", "file": f"{data}/../../{outside.name}/private.wav"},
        "link": {"kind": "transcription", "file": str(data / "link.wav")},
        "passwd": {"kind": "transcription", "file": str(tmp_path / "passwd.wav")},
        "fifo": {"kind": "transcription", "file": str(tmp_path / "pipe.wav")},
        "clone": {
            "kind": "speech",
            "model": "mimo-v2.5-tts-voiceclone",
            "input": "Say it.",
            "voice": str(outside / "private.wav"),
        },
    }
    for job_id, job in hostile.items():
        await _raw(redis, job_id, job)
    honest = [
        await producer.enqueue({"kind": "transcription", "file": str(good)}),
        await producer.enqueue({"kind": "speech", "input": "still here", "model": "mimo-v2.5-tts"}),
    ]
    results = await asyncio.gather(*(producer.wait(j, timeout_s=60) for j in hostile))
    for job_id, result in zip(hostile, results, strict=True):
        assert result.status == "failed", job_id
        assert result.error is not None and result.error["type"] == "invalid_request_error"
        message = str(result.error["message"])
        assert "root:" not in message and "private words" not in message, message
        expected = "not a regular file" if job_id == "fifo" else "outside the folders"
        assert expected in message, (job_id, message)
        assert result.error["param"] == ("voice" if job_id == "clone" else "file")
    for enqueued in honest:
        done = await producer.wait(enqueued.job_id, timeout_s=60)
        assert done.status == "succeeded", done.error
    assert (await producer.wait(honest[0].job_id)).text == "honest words"
    assert worker.jobs_failed == 0


def test_the_cli_uploads_an_outside_file_once(sim: RunningSim, tmp_path: Path) -> None:
    """`mimoq transcribe FILE` with FILE outside the roots: staged to inputs/<sha256>, once."""
    from tests.e2e.conftest import API_KEY

    (tmp_path / "elsewhere").mkdir()
    audio = speech_wav(tmp_path / "elsewhere" / "a.wav", "Staged first.")
    env = clean_env(
        MIMO_API_KEY=API_KEY, MIMO_BASE_URL=sim.url, MIMOQ_DATA_DIR=str(tmp_path / "out")
    )
    first = mimoq("transcribe", str(audio), "--format", "text", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["text"] == "Staged first."
    staged = list((tmp_path / "out" / "inputs").iterdir())
    assert len(staged) == 1 and staged[0].suffix == ".wav" and len(staged[0].stem) == 64
    assert staged[0].read_bytes() == audio.read_bytes()
    before = staged[0].stat().st_mtime_ns
    again = mimoq("transcribe", str(audio), "--format", "text", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert [p.stat().st_mtime_ns for p in (tmp_path / "out" / "inputs").iterdir()] == [before]
