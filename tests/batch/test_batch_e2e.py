"""``mimoq batch`` as people run it: real processes, the simulator as MiMo, kills and resumes."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from mimoq.sim.sim_server import RunningSim
from tests.batch.conftest import add_fault, batch_env, sim_stats
from tests.conftest import RedisServer
from tests.e2e.test_pipeline import speech_wav
from tests.support.cli import mimoq, mimoq_args
from tests.support.polling import wait_until
from tests.support.receiver import Receiver

pytestmark = pytest.mark.slow
FILES = 300


def make_archive(root: Path, n: int) -> list[str]:
    """``n`` short recordings in nested folders; the simulator hears each as its own name."""
    names = []
    for i in range(n):
        rel = f"day{i % 3}/take{i // 3:03d}.wav"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        speech_wav(root / rel, f"recording {i}", seconds=0.05)
        names.append(rel)
    return names


def journaled(data: Path) -> dict[str, dict[str, object]]:
    """The finished items a run has journaled so far, by job id."""
    out: dict[str, dict[str, object]] = {}
    for journal in data.glob("batches/*/journal.jsonl"):
        for line in journal.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by the kill
            out[record["job_id"]] = record
    return out


def report(data: Path) -> list[dict[str, str]]:
    (path,) = data.glob("batches/*/report.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def asr_requests(sim: RunningSim) -> int:
    return int(sim_stats(sim)["requests"].get("mimo-v2.5-asr", 0))


def test_archive_killed_midway_and_resumed_does_every_file_once(
    sim: RunningSim, tmp_path: Path
) -> None:
    archive, data = tmp_path / "archive", tmp_path / "data"
    names = make_archive(archive, FILES)
    env = batch_env(sim, data, MIMOQ_CONCURRENCY="8")
    add_fault(sim, kind="latency", ms=20, times=None)  # slow enough to be caught midway
    args = mimoq_args("batch", str(archive), "--progress", "lines", "--every", "0.2")
    with subprocess.Popen(
        args, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as first:
        wait_until(
            lambda: len(journaled(data)) >= FILES // 3 or first.poll() is not None,
            60,
            "a third done",
        )
        first.send_signal(signal.SIGKILL)  # a crash: no clean-up, no final report
        first.communicate()
    done_before = {k for k, r in journaled(data).items() if r["status"] == "succeeded"}
    calls_before = asr_requests(sim)
    assert FILES // 3 <= len(done_before) < FILES, "the kill must land midway"

    second = mimoq("batch", str(archive), "--progress", "lines", env=env, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    calls_after = asr_requests(sim) - calls_before
    # Exactly the files not finished before the kill were sent to MiMo again, once each.
    assert calls_after == FILES - len(done_before)
    assert f"{len(done_before)} from earlier runs" in second.stderr

    rows = report(data)
    assert sorted(r["input"] for r in rows) == sorted(names)
    assert {r["status"] for r in rows} == {"succeeded"}
    assert len({r["job_id"] for r in rows}) == FILES
    for row in rows:
        i = names.index(row["input"])
        expected = data / "archive" / f"{row['input']}.json"
        assert row["output"] == str(expected)
        assert json.loads(expected.read_text()) == {"text": f"recording {i}"}
    csv_lines = next(data.glob("batches/*/report.csv")).read_text().splitlines()
    assert csv_lines[0] == "input,job_id,status,output,error" and len(csv_lines) == FILES + 1


def test_progress_off_a_terminal_is_one_line_at_a_time(sim: RunningSim, tmp_path: Path) -> None:
    archive, data = tmp_path / "archive", tmp_path / "data"
    make_archive(archive, 20)
    done = mimoq("batch", str(archive), "--every", "0.05", env=batch_env(sim, data), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "\x1b[" not in done.stderr  # no cursor tricks, no colours
    progress = [
        line for line in done.stderr.splitlines() if re.match(r"batch \S+: \d+/20 done", line)
    ]
    assert progress, done.stderr
    assert re.fullmatch(
        r"batch \S+: 20/20 done \(20 ok, 0 failed\), 0 in flight, 0 waiting, [\d.-]+/min, ETA 0s",
        progress[-1],
    )
    counts = [int(re.match(r"batch \S+: (\d+)/", line).group(1)) for line in progress]  # type: ignore[union-attr]
    assert counts == sorted(counts)
    # the summary table goes to stdout
    assert re.search(r"succeeded\s+│\s+20", done.stdout)


def test_failed_items_are_reported_and_retried_alone_on_the_next_run(
    sim: RunningSim, tmp_path: Path
) -> None:
    lines, data = tmp_path / "book.txt", tmp_path / "data"
    lines.write_text("The first sentence.\nThe second sentence.\nThe third sentence.\n")
    add_fault(sim, kind="status", status=400, match="second sentence", times=1)
    env = batch_env(sim, data)
    first = mimoq(
        "batch", str(lines), "--voice", "Mia", "--progress", "none", env=env, cwd=tmp_path
    )
    assert first.returncode == 1
    rows = {r["input"]: r for r in report(data)}
    assert rows["book.txt:2"]["status"] == "failed"
    assert rows["book.txt:2"]["error"].startswith("invalid_request_error")
    assert "failed: book.txt:2: invalid_request_error" in first.stderr
    assert rows["book.txt:1"]["status"] == rows["book.txt:3"]["status"] == "succeeded"
    before = sim_stats(sim)["requests"]["mimo-v2.5-tts"]

    second = mimoq(
        "batch", str(lines), "--voice", "Mia", "--progress", "none", env=env, cwd=tmp_path
    )
    assert second.returncode == 0, second.stderr
    assert sim_stats(sim)["requests"]["mimo-v2.5-tts"] - before == 1  # only the failed one
    assert (data / "book" / "00002.wav").is_file()

    forced = mimoq(
        "batch",
        str(lines),
        "--voice",
        "Mia",
        "--force",
        "--progress",
        "none",
        env=env,
        cwd=tmp_path,
    )
    assert forced.returncode == 0, forced.stderr
    assert sim_stats(sim)["requests"]["mimo-v2.5-tts"] - before == 4  # --force redoes all three


def test_status_counts_a_run(sim: RunningSim, tmp_path: Path) -> None:
    archive, data = tmp_path / "archive", tmp_path / "data"
    make_archive(archive, 5)
    (archive / "broken.wav").write_bytes(b"RIFF nothing useful")
    env = batch_env(sim, data)
    done = mimoq(
        "batch", str(archive), "--run-id", "nightly", "--progress", "none", env=env, cwd=tmp_path
    )
    assert done.returncode == 1
    status = mimoq("batch", "status", "nightly", "--json", env=env, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    counts = json.loads(status.stdout)
    assert (counts["run"], counts["total"], counts["succeeded"], counts["failed"]) == (
        "nightly",
        6,
        5,
        1,
    )
    missing = mimoq("batch", "status", "nope", env=env, cwd=tmp_path)
    assert missing.returncode == 2 and "no batch run 'nope'" in missing.stderr


@pytest.mark.redis
def test_with_a_shared_redis_a_resumed_run_repeats_no_call(
    sim: RunningSim, tmp_path: Path, redis_server: RedisServer
) -> None:
    archive, data = tmp_path / "archive", tmp_path / "data"
    make_archive(archive, 60)
    env = batch_env(sim, data, REDIS_URL=redis_server.url, MIMOQ_CONCURRENCY="4")
    add_fault(sim, kind="latency", ms=50, times=None)
    worker_log = tmp_path / "worker.log"
    with worker_log.open("wb") as sink:
        worker = subprocess.Popen(
            mimoq_args("worker"), env=env, cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        args = mimoq_args("batch", str(archive), "--progress", "none")
        first = subprocess.Popen(
            args, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:  # a worker that died must fail the test, not leave the batch waiting forever
            wait_until(
                lambda: len(journaled(data)) >= 20 or (first.poll(), worker.poll()) != (None, None),
                60,
                "20 done",
            )
        finally:
            first.send_signal(signal.SIGKILL)
            first.communicate()
        assert worker.poll() is None, worker_log.read_text()[-3000:]
        assert len(journaled(data)) < 60, "the kill must land midway"
        # No batch process watches now: its progress is read from Redis, from anywhere
        (run,) = [p.name for p in (data / "batches").iterdir()]
        elsewhere = {**env, "MIMOQ_DATA_DIR": str(tmp_path / "elsewhere")}

        def status() -> dict[str, object]:
            done = mimoq("batch", "status", run, "--json", env=elsewhere, cwd=tmp_path)
            assert done.returncode == 0, done.stderr
            return dict(json.loads(done.stdout))

        drained = wait_until(
            lambda: (s := status())["in_flight"] == s["waiting"] == 0 and s, 60, "drained"
        )
        assert isinstance(drained, dict)
        assert drained["succeeded"] == drained["total"] and drained["eta_s"] == 0.0
        assert drained["failed"] == drained["cancelled"] == 0
        resumed = mimoq("batch", str(archive), "--progress", "none", env=env, cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        final = status()
        assert (final["total"], final["succeeded"]) == (60, 60) and final["ended_at"] is not None
        table = mimoq("batch", "status", run, env=elsewhere, cwd=tmp_path)
        rows = [line.replace("│", " ").split() for line in table.stdout.splitlines()]
        assert table.returncode == 0 and ["succeeded", "60"] in rows and ["total", "60"] in rows
        assert any(row[:2] == ["ended", "at"] for row in rows), table.stdout
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    # Results live in Redis: jobs that finished while no batch was watching are not redone.
    assert asr_requests(sim) == 60
    assert {r["status"] for r in report(data)} == {"succeeded"}


def test_a_run_with_a_callback_gets_one_signed_batch_completed(
    sim: RunningSim, tmp_path: Path
) -> None:
    """Embedded (no REDIS_URL): the run's end event is delivered before the process exits."""
    archive, data = tmp_path / "archive", tmp_path / "data"
    make_archive(archive, 4)
    (archive / "broken.wav").write_bytes(b"RIFF nothing useful")
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    env = batch_env(
        sim, data, MIMOQ_CALLBACK_ALLOW_NETWORKS="127.0.0.0/8", MIMOQ_WEBHOOK_SECRET=secret
    )
    with Receiver() as receiver:
        done = mimoq("batch", str(archive), "--run-id", "hooked", "--progress", "none",
                     "--callback", receiver.url("/runs"), env=env, cwd=tmp_path)  # fmt: skip
        assert done.returncode == 1, done.stderr  # the broken recording failed
        (event,) = receiver.requests
    body = Webhook(secret).verify(event.body, event.headers)
    assert event.headers["webhook-id"] == "cb-run:hooked"
    assert (body["type"], body["run"], body["status"]) == ("batch.completed", "hooked", "completed")
    assert (body["total"], body["succeeded"], body["failed"]) == (5, 4, 1)
    refused = mimoq("batch", str(archive), "--callback", "http://10.0.0.1/x", env=env, cwd=tmp_path)
    assert refused.returncode == 2 and "callback" in refused.stderr
