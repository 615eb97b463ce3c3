"""`mimoq batch s3://bucket/archive/`: an archive kept in a bucket, transcribed where it lies."""

from __future__ import annotations

import json
from pathlib import Path

import obstore
import pytest

from mimoq.core.remote import object_location
from mimoq.sim.server import RunningSim
from tests.batch.conftest import batch_env, sim_stats
from tests.e2e.test_pipeline import speech_wav
from tests.support.cli import mimoq
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
