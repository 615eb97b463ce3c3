"""Local storage writes atomically under deterministic keys."""

from __future__ import annotations

import io
import threading
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


class _PausingSource:
    """A file's bytes, then a pause (until ``resume``) before its end: a slow upload."""

    def __init__(self, data: bytes) -> None:
        self._parts = [data, b""]
        self.paused, self.resume = threading.Event(), threading.Event()

    def read(self, _size: int = -1) -> bytes:
        if len(self._parts) == 1:
            self.paused.set()
            assert self.resume.wait(30)
        return self._parts.pop(0)


def test_two_writers_of_one_content_addressed_key_both_succeed(tmp_path: Path) -> None:
    """Staged inputs: a batch stages one recording for two jobs at once (issue 19, item 2)."""
    storage = LocalStorage(tmp_path)
    data = b"RIFF one recording"
    slow = _PausingSource(data)
    errors: list[BaseException] = []

    def put_slowly() -> None:
        try:
            storage.put_file("inputs/abc.wav", slow)  # type: ignore[arg-type]
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    writer = threading.Thread(target=put_slowly)
    writer.start()
    assert slow.paused.wait(30)
    storage.put_file("inputs/abc.wav", io.BytesIO(data))  # the other writer, meanwhile
    slow.resume.set()
    writer.join(30)
    assert errors == []
    assert (tmp_path / "inputs/abc.wav").read_bytes() == data
    assert [p.name for p in (tmp_path / "inputs").iterdir()] == ["abc.wav"]


def test_keys_of_locations_and_copies_within_the_store(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.put_file("out/a.json", io.BytesIO(b'{"text": "hi"}'))
    located = storage.locate("out/a.json")
    assert storage.key_of(located) == "out/a.json"
    assert storage.key_of(storage.url("out/a.json")) == "out/a.json"  # file:// too
    assert storage.key_of(str(tmp_path.parent / "elsewhere.json")) is None
    assert storage.key_of("s3://bucket/out/a.json") is None
    storage.copy("out/a.json", "copies/b.json")
    assert (tmp_path / "copies/b.json").read_bytes() == b'{"text": "hi"}'
    with pytest.raises(FileNotFoundError):
        storage.copy("out/missing.json", "copies/c.json")
    assert not storage.exists("copies/c.json")
