"""Local storage writes atomically under deterministic keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from mimoq.core.storage import LocalStorage


def test_write_then_rename(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    with storage.open_atomic("speech/a.wav") as f:
        f.write(b"abc")
        assert not storage.exists("speech/a.wav")  # invisible until complete
    assert (tmp_path / "speech/a.wav").read_bytes() == b"abc"
    assert storage.locate("speech/a.wav") == str(tmp_path.resolve() / "speech/a.wav")
    assert [p.name for p in (tmp_path / "speech").iterdir()] == ["a.wav"]


def test_failure_leaves_nothing_and_keeps_the_old_output(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    with storage.open_atomic("x.wav") as f:
        f.write(b"old")
    with pytest.raises(RuntimeError), storage.open_atomic("x.wav") as f:
        f.write(b"partial")
        raise RuntimeError("killed mid-write")
    assert (tmp_path / "x.wav").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.wav"]


def test_keys_cannot_escape(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="escapes"):
        LocalStorage(tmp_path).locate("../outside.wav")


def test_a_killed_writers_temp_file_is_reused_by_the_next_write(tmp_path: Path) -> None:
    (tmp_path / ".a.wav.tmp").write_bytes(b"half written, longer than the new output")
    (tmp_path / ".b.wav.tmp").write_bytes(b"another key's")
    with LocalStorage(tmp_path).open_atomic("a.wav") as f:
        f.write(b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.wav.tmp", "a.wav"]
    assert (tmp_path / "a.wav").read_bytes() == b"whole"
