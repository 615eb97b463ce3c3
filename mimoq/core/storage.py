"""Where outputs go: a small Storage protocol, and local files first."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol


class Storage(Protocol):
    """Outputs are written under a deterministic key, atomically: all or nothing."""

    def open_atomic(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]: ...

    def locate(self, key: str) -> str:
        """Where a reader finds the object (a filesystem path for local storage)."""
        ...

    def exists(self, key: str) -> bool: ...

    def is_local(self) -> bool:
        """Whether ``locate`` gives a path on this machine's filesystem."""
        ...


class LocalStorage:
    """Files under ``root``; each output is written to a temporary name and renamed into place.

    A killed worker leaves at most a ``.tmp`` file (reused by the job's next run), never a
    truncated output under the real name, and a re-run overwrites the same path, so
    at-least-once execution is harmless.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"output key {key!r} escapes the data directory")
        return path

    def locate(self, key: str) -> str:
        return str(self._path(key))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def is_local(self) -> bool:
        return True

    @contextlib.contextmanager
    def open_atomic(self, key: str) -> Iterator[BinaryIO]:
        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        # One fixed temp name per key: a worker killed mid-write leaves it behind and the
        # job's next run truncates it (only one run of a job holds arq's in-progress key at a
        # time), with no directory listing, however many outputs share the folder.
        tmp = final.with_name(f".{final.name}.tmp")
        try:
            with open(tmp, "w+b") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        # The rename is durable only once the directory entry is on disk.
        dir_fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
