"""``mimoq batch`` on archives as people have them: subsets, copies, long paths, Ctrl-C.

Real ``mimoq`` processes, the simulator as MiMo, the embedded default (no Redis server).
"""

from __future__ import annotations

import json
import re
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest

from mimoq.producer.batch_plan import BatchOptions, SourceKind, legacy_job_id, plan
from mimoq.producer.batch_state import ItemRecord, ItemStatus, RunFiles
from mimoq.sim.sim_server import RunningSim
from tests.batch.conftest import add_fault, batch_env
from tests.batch.test_batch_e2e import asr_requests, journaled, report
from tests.e2e.test_pipeline import speech_wav
from tests.support.cli import mimoq, mimoq_args
from tests.support.polling import wait_until

pytestmark = pytest.mark.slow


def cbr_mp3(path: Path, frames: int) -> Path:
    """MPEG-1 Layer III frames (128 kbit/s, 44.1 kHz, 417 bytes each) of silence-like data."""
    header = struct.pack(">I", 0xFFFB9000)  # sync, MPEG-1, layer III, 128k, 44.1k, no pad
    path.write_bytes((header + bytes(413)) * frames)
    return path


def test_a_glob_subset_never_overwrites_another_files_transcript(
    sim: RunningSim, tmp_path: Path
) -> None:
    archive, data = tmp_path / "calls", tmp_path / "data"
    archive.mkdir()
    speech_wav(archive / "a.wav", "the wav one", seconds=0.1)
    cbr_mp3(archive / "a.mp3", 40)
    env = batch_env(sim, data)

    def run(*extra: str) -> dict[str, str]:
        done = mimoq(
            "batch", str(archive), "--run-id", "calls", "--progress", "none", *extra,
            env=env, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return {
            name: (data / "calls" / f"{name}.json").read_text()
            for name in ("a.wav", "a.mp3")
            if (data / "calls" / f"{name}.json").is_file()
        }

    full = run()
    assert json.loads(full["a.wav"]) == {"text": "the wav one"}
    assert json.loads(full["a.mp3"])["text"].startswith("[audio ")
    subset = run("--glob", "*.wav")
    assert subset == full  # a.mp3's transcript untouched by a run that did not take it
    again = run("--force")
    assert again == full
    rows = {r["input"]: r for r in report(data)}
    assert rows["a.mp3"]["output"] == str(data / "calls" / "a.mp3.json")


def test_the_same_recording_under_two_names_is_transcribed_and_paid_once(
    sim: RunningSim, tmp_path: Path
) -> None:
    archive, data = tmp_path / "calls", tmp_path / "data"
    (archive / "backup").mkdir(parents=True)
    speech_wav(archive / "monday.wav", "good morning", seconds=0.1)
    speech_wav(archive / "backup" / "monday copy.wav", "good morning", seconds=0.1)
    speech_wav(archive / "tuesday.wav", "good evening", seconds=0.1)
    env = batch_env(sim, data)
    done = mimoq("batch", str(archive), "--progress", "none", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert asr_requests(sim) == 2  # monday once, tuesday once
    assert "1 item(s) repeat another item's content" in done.stderr
    rows = {r["input"]: r for r in report(data)}
    assert {r["status"] for r in rows.values()} == {"succeeded"}
    copy = Path(rows["backup/monday copy.wav"]["output"])
    assert copy == data / "calls" / "backup" / "monday copy.wav.json"
    assert json.loads(copy.read_text()) == {"text": "good morning"}
    assert copy.read_bytes() == Path(rows["monday.wav"]["output"]).read_bytes()

    # A later run that finds the same recording under a third name copies it: no new call.
    speech_wav(archive / "monday again.wav", "good morning", seconds=0.1)
    later = mimoq("batch", str(archive), "--progress", "none", env=env, cwd=tmp_path)
    assert later.returncode == 0, later.stderr
    assert asr_requests(sim) == 2
    fresh = data / "calls" / "monday again.wav.json"
    assert json.loads(fresh.read_text()) == {"text": "good morning"}


def test_off_a_terminal_nothing_is_wrapped(sim: RunningSim, tmp_path: Path) -> None:
    deep = tmp_path / ("a-rather-long-folder-name-" * 3) / "and-another-one-below-it"
    archive, data = deep / "archive", deep / "data"
    archive.mkdir(parents=True)
    speech_wav(archive / "fine.wav", "fine", seconds=0.1)
    broken = archive / "a recording whose name alone is longer than forty characters.wav"
    broken.write_bytes(b"RIFF nothing useful")
    done = mimoq(
        "batch", str(archive), "--progress", "lines", env=batch_env(sim, data), cwd=tmp_path
    )
    assert done.returncode == 1
    reports = re.findall(r"^report: (\S.*)$", done.stderr, re.MULTILINE)
    assert [Path(p).name for p in reports] == ["report.jsonl", "report.csv"], done.stderr
    assert all(len(p) > 80 and Path(p).is_file() for p in reports)
    (failure,) = [line for line in done.stderr.splitlines() if line.startswith("failed: ")]
    assert failure.startswith(f"failed: {broken.name}: invalid_request_error: ")
    (row,) = [r for r in report(data) if r["status"] == "failed"]
    assert len(row["error"]) > 80
    assert failure == f"failed: {broken.name}: {row['error']}"  # the whole message, one line


def _default_ctrl_c() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_journals_every_answer_received_and_exits_promptly(
    sim: RunningSim, tmp_path: Path
) -> None:
    files = 40
    archive, data = tmp_path / "archive", tmp_path / "data"
    archive.mkdir()
    for i in range(files):
        speech_wav(archive / f"take{i:02d}.wav", f"take {i}", seconds=0.05)
    # Every call takes 1.5 s, and a shutdown grace of a minute: an interrupted run that
    # waited the whole grace, or dropped the answers of the calls in flight, shows here.
    add_fault(sim, kind="latency", ms=1500, times=None)
    env = batch_env(sim, data, MIMOQ_CONCURRENCY="8", MIMOQ_SHUTDOWN_GRACE_S="60")
    args = mimoq_args("batch", str(archive), "--progress", "none")
    # A shell runs a background command with SIGINT ignored, and a child inherits that: the
    # run would shrug off the Ctrl-C below whenever the suite itself was started with `&`.
    with subprocess.Popen(
        args,
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_ctrl_c,
    ) as run:
        wait_until(lambda: len(journaled(data)) >= 8 or run.poll() is not None, 120, "8 done")
        assert run.poll() is None, "the run must still be going when interrupted"
        interrupted = time.monotonic()
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=120)
        took = time.monotonic() - interrupted
    assert run.returncode == 130, stderr
    assert took < 45, f"an interrupted run took {took:.1f} s to exit"
    assert "interrupted: letting calls in flight finish" in stderr
    done = {k for k, r in journaled(data).items() if r["status"] == "succeeded"}
    paid = asr_requests(sim)
    assert 8 <= len(done) < files
    assert len(done) == paid, "every answer received is in the journal"

    # The rerun checks what is paid for, not how long calls take: without the slow calls
    # its ~30 files are seconds of waiting less.
    sim.state.clear_faults()
    again = mimoq("batch", str(archive), "--progress", "none", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert asr_requests(sim) - paid == files - len(done)  # nothing paid for twice


def test_an_archive_finished_by_an_older_version_is_not_paid_for_again(
    sim: RunningSim, tmp_path: Path
) -> None:
    """Before content identity, outputs were ``a.json`` and ids hashed the output key: a
    journal of such a run is recognised (same recording, same parameters) and copied."""
    archive, data = tmp_path / "calls", tmp_path / "data"
    archive.mkdir()
    speech_wav(archive / "a.wav", "done long ago", seconds=0.1)
    speech_wav(archive / "b.wav", "never done", seconds=0.1)
    files = RunFiles(data, "calls")
    (item, _) = plan(archive, SourceKind.directory, BatchOptions(), files)
    assert item.job is not None and item.content_sha256 is not None
    old_output = data / "calls" / "a.json"
    old_output.parent.mkdir(parents=True)
    old_output.write_text('{"text":"done long ago"}\n')
    old_id = legacy_job_id(item.job, "calls/a.json", item.content_sha256)
    files.append_journal(
        [ItemRecord("a.wav", old_id, ItemStatus.succeeded, output=str(old_output))]
    )
    # A journaled job of another recording under the same name is not taken for it.
    files.append_journal(
        [ItemRecord("b.wav", "t-" + "0" * 40, ItemStatus.succeeded, output=str(old_output))]
    )
    done = mimoq(
        "batch", str(archive), "--run-id", "calls", "--progress", "none",
        env=batch_env(sim, data), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert asr_requests(sim) == 1  # b.wav only
    assert json.loads((data / "calls" / "a.wav.json").read_text()) == {"text": "done long ago"}
    assert json.loads((data / "calls" / "b.wav.json").read_text()) == {"text": "never done"}
