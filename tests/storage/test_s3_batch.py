"""`mimoq batch s3://bucket/archive/`: an archive kept in a bucket, transcribed where it lies."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import obstore
import pytest

from mimoq.core.remote import object_location
from mimoq.sim.sim_server import RunningSim
from tests.batch.conftest import batch_env, sim_stats
from tests.conftest import RedisServer
from tests.e2e.test_pipeline import speech_wav
from tests.support.cli import mimoq, mimoq_args
from tests.support.seaweed import SeaweedS3

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_a_bucket_prefix_is_planned_with_globs_and_resumed_without_new_calls(
    sim: RunningSim, seaweed: SeaweedS3, bucket_url: str, tmp_path: Path
) -> None:
    archive = f"{bucket_url}/archive"
    store, base = object_location(archive, None, "source")
    wav = speech_wav(tmp_path / "kept.wav", "A recording kept in a bucket.").read_bytes()
    for name in ("a.wav", "day2/b.WAV", "day2/notes.txt", ".trash/c.wav"):
        obstore.put(store, f"{base}/{name}", wav if name.endswith(("wav", "WAV")) else b"x")
    env = batch_env(sim, tmp_path / "data", **seaweed.env())

    first = mimoq("batch", archive, "--glob", "**/*.wav", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    report = next(line for line in first.stderr.splitlines() if line.startswith("report: "))
    rows = [
        json.loads(line) for line in Path(report.removeprefix("report: ")).read_text().splitlines()
    ]
    # Globs match the path below the prefix, case-insensitively; hidden folders are skipped.
    assert sorted(r["input"] for r in rows) == ["a.wav", "day2/b.WAV"]
    assert {r["status"] for r in rows} == {"succeeded"}
    outputs = sorted(
        p.relative_to(tmp_path / "data").as_posix()
        for p in (tmp_path / "data").rglob("*.json")
        if "archive/" in p.as_posix()
    )
    assert outputs == ["archive/a.wav.json", "archive/day2/b.WAV.json"]
    heard = json.loads((tmp_path / "data" / "archive" / "a.wav.json").read_text())
    assert heard["text"] == "A recording kept in a bucket."  # the bytes came from the bucket
    calls = sim_stats(sim)["requests"]["mimo-v2.5-asr"]
    assert calls == 2  # the worker read each object from the bucket and sent it once

    again = mimoq("batch", archive, "--glob", "**/*.wav", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert sim_stats(sim)["requests"]["mimo-v2.5-asr"] == calls  # resumed: nothing re-sent


def test_an_unreadable_prefix_is_refused_naming_the_source(
    sim: RunningSim, seaweed: SeaweedS3, tmp_path: Path
) -> None:
    env = batch_env(sim, tmp_path / "data", **{**seaweed.env(), "AWS_SECRET_ACCESS_KEY": "wrong"})
    result = mimoq("batch", "s3://no-such-bucket-here/archive/", env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot list s3://no-such-bucket-here/archive/" in result.stderr
    assert "wrong" not in result.stderr


@pytest.fixture
def fleet_env(
    sim: RunningSim,
    seaweed: SeaweedS3,
    bucket_url: str,
    redis_server: RedisServer,
    tmp_path: Path,
) -> Iterator[dict[str, str]]:
    """A worker "host" of its own sharing only Redis and the bucket with the batch, whose
    environment (another data directory: a third host) this yields."""
    shared = {"REDIS_URL": redis_server.url, "MIMOQ_STORAGE_URL": bucket_url, **seaweed.env()}
    worker_home = tmp_path / "worker-host"
    worker_home.mkdir()
    worker = subprocess.Popen(
        mimoq_args("worker"), env=batch_env(sim, worker_home / "data", **shared),
        cwd=worker_home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    (tmp_path / "batch-host").mkdir()
    try:
        yield batch_env(sim, tmp_path / "batch-host" / "data", **shared)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)


def _object(url: str) -> bytes:
    store, path = object_location(url, None, "output")
    return bytes(obstore.get(store, path).bytes())


def _rows(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    report = next(line for line in done.stderr.splitlines() if line.startswith("report: "))
    lines = Path(report.removeprefix("report: ")).read_text().splitlines()
    return {row["input"]: row for row in map(json.loads, lines)}


def test_a_folder_with_one_recording_twice_is_copied_within_the_bucket(
    sim: RunningSim, bucket_url: str, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    """Issue 19, item 1: two.wav is one.wav again; its output is a copy made in the store."""
    home = tmp_path / "batch-host"
    archive = home / "calls"
    archive.mkdir()
    speech_wav(archive / "one.wav", "the same call", seconds=0.2)
    (archive / "two.wav").write_bytes((archive / "one.wav").read_bytes())
    speech_wav(archive / "three.wav", "another call", seconds=0.2)
    done = mimoq("batch", str(archive), "--progress", "none", env=fleet_env, cwd=home)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = _rows(done)
    assert {name: row["status"] for name, row in rows.items()} == dict.fromkeys(
        ("one.wav", "three.wav", "two.wav"), "succeeded"
    )
    assert rows["two.wav"]["output"] == f"{bucket_url}/calls/two.wav.json"
    assert json.loads(_object(rows["two.wav"]["output"])) == {"text": "the same call"}
    assert _object(rows["one.wav"]["output"]) == _object(rows["two.wav"]["output"])
    assert int(sim_stats(sim)["requests"]["mimo-v2.5-asr"]) == 2  # one.wav once, three.wav
    assert not list(tmp_path.rglob("*.wav.json"))  # no output went through a local disk


def test_a_prefix_whose_jobs_ran_under_other_names_gets_copies_within_the_bucket(
    sim: RunningSim, bucket_url: str, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    """The same objects planned from a wider prefix with ``--glob``: same jobs (same objects,
    same parameters) whose results Redis has, under other output keys: copied, not re-run."""
    home = tmp_path / "batch-host"
    source = bucket_url.rsplit("/", 1)[0] + "/recordings"
    store, base = object_location(source, None, "source")
    for name, text in (("sub/a.wav", "first take"), ("sub/b.wav", "second take")):
        wav = speech_wav(tmp_path / "take.wav", text, seconds=0.2).read_bytes()
        obstore.put(store, f"{base}/{name}", wav)
    narrow = mimoq("batch", f"{source}/sub/", "--progress", "none", env=fleet_env, cwd=home)
    assert narrow.returncode == 0, narrow.stdout + narrow.stderr
    calls = int(sim_stats(sim)["requests"]["mimo-v2.5-asr"])
    assert calls == 2

    wide = mimoq(
        "batch", f"{source}/", "--glob", "sub/*.wav", "--progress", "none",
        env=fleet_env, cwd=home,
    )  # fmt: skip
    assert wide.returncode == 0, wide.stdout + wide.stderr
    rows = _rows(wide)
    assert rows["sub/a.wav"]["output"] == f"{bucket_url}/recordings/sub/a.wav.json"
    assert json.loads(_object(rows["sub/a.wav"]["output"])) == {"text": "first take"}
    assert json.loads(_object(rows["sub/b.wav"]["output"])) == {"text": "second take"}
    assert _object(f"{bucket_url}/sub/a.wav.json") == _object(rows["sub/a.wav"]["output"])
    assert int(sim_stats(sim)["requests"]["mimo-v2.5-asr"]) == calls  # nothing re-sent
