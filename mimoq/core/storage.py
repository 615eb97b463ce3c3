"""Where outputs (and staged inputs) go: one Storage protocol, a local backend, and obstore's.

Keys are relative, ``/``-separated and deterministic (``speech/<id>.wav``), so a re-run of
a job overwrites the same object. Every write is all or nothing: the local backend writes a
temporary file, fsyncs and renames; object stores make an object visible only when its
(multipart) upload completes, and a failed write aborts the upload.

Blocking methods (``exists``, ``open_atomic``, ``open_read``, ``put_file``...) are for
threads; the async ones (``stream``, ``put_bytes``, ``presign``) for the event loop.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import urlsplit
from urllib.request import url2pathname


class StreamWriter(Protocol):
    """A forward-only writer: the object appears, complete, when its ``stream`` block ends."""

    async def write(self, data: bytes) -> None: ...


class Storage(Protocol):
    """Outputs are written under a deterministic key, atomically: all or nothing."""

    def url(self, key: str) -> str:
        """The object's canonical URL: ``file:///…``, ``s3://bucket/prefix/key``…"""
        ...

    def locate(self, key: str) -> str:
        """Where a reader finds the object: a filesystem path when local, else its URL."""
        ...

    def is_local(self) -> bool:
        """Whether ``locate`` gives a path on this machine's filesystem."""
        ...

    def exists(self, key: str) -> bool: ...

    def key_of(self, location: str) -> str | None:
        """The key of an object ``locate`` (or ``url``) gave, or None if it lies elsewhere."""
        ...

    def size(self, key: str) -> int:
        """The object's size in bytes; FileNotFoundError if it does not exist."""
        ...

    def copy(self, source: str, key: str) -> None:
        """Copy the object at key ``source`` to ``key``, within the store (server-side where
        the store has it); OSError if it cannot (FileNotFoundError: no ``source``)."""
        ...

    def open_atomic(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """A seekable file that becomes the object when the block ends without error."""
        ...

    def open_read(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """The object for reading: seekable, read in ranges (never whole into memory)."""
        ...

    def put_file(self, key: str, source: BinaryIO) -> None:
        """Copy an open file (from its current position) into the object."""
        ...

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under ``prefix/`` (missing ones are fine)."""
        ...

    def delete(self, key: str) -> None:
        """Remove one object (a missing one is fine): a cancelled job's output."""
        ...

    def stream(self, key: str) -> contextlib.AbstractAsyncContextManager[StreamWriter]: ...

    async def put_bytes(self, key: str, data: bytes) -> None: ...

    async def rewrite(self, source: str, key: str, head: bytes, start: int, length: int) -> None:
        """Write ``head`` + ``length`` bytes of ``source`` from ``start`` to ``key``, streamed,
        then delete ``source`` (a staged WAV getting its final header)."""
        ...

    async def presign(self, key: str, ttl_s: int) -> str | None:
        """A URL that downloads the object without credentials, or None if unsupported."""
        ...


def local_file(location: str) -> str:
    """A ``file://`` URL's path (percent-decoded); anything else as it is."""
    if location.lower().startswith("file://"):
        return url2pathname(urlsplit(location).path)
    return location


def check_key(key: str) -> str:
    """Refuse keys that are absolute or climb out (``..``): keys are relative paths."""
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"storage key {key!r} is not a relative path")
    return key


class _FileWriter:
    def __init__(self, f: BinaryIO) -> None:
        self._f = f

    async def write(self, data: bytes) -> None:
        # A local write lands in the page cache in microseconds: no thread hop needed.
        self._f.write(data)


class LocalStorage:
    """Files under ``root``; each output is written to a temporary name and renamed into place.

    A killed worker leaves at most a ``.tmp`` file (reused by the job's next run), never a
    truncated output under the real name, and a re-run overwrites the same path, so
    at-least-once execution is harmless.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"output key {key!r} escapes the data directory")
        return path

    def url(self, key: str) -> str:
        return self._path(key).as_uri()

    def locate(self, key: str) -> str:
        return str(self._path(key))

    def is_local(self) -> bool:
        return True

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def key_of(self, location: str) -> str | None:
        path = Path(local_file(location)).expanduser()
        if not path.is_absolute():
            return None
        try:
            return check_key(path.resolve().relative_to(self.root).as_posix())
        except ValueError:
            return None

    def copy(self, source: str, key: str) -> None:
        with self.open_read(source) as src, self.open_atomic(key) as out:
            shutil.copyfileobj(src, out, 1 << 20)

    def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(key)
        return path.stat().st_size

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        with open(self._path(key), "rb") as f:
            yield f

    def put_file(self, key: str, source: BinaryIO) -> None:
        # Staged inputs are content-addressed and put by writers that do not coordinate (a
        # batch's parallel enqueues of one recording, two producers, the HTTP front door):
        # each copies under a temporary name of its own, so no writer truncates or renames
        # away another's file, and the object is always one whole copy.
        with self._atomic(key, f".{secrets.token_hex(8)}.tmp") as out:
            shutil.copyfileobj(source, out, 1 << 20)

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self._path(check_key(prefix)), ignore_errors=True)

    def delete(self, key: str) -> None:
        self._path(check_key(key)).unlink(missing_ok=True)

    @contextlib.asynccontextmanager
    async def stream(self, key: str) -> AsyncIterator[StreamWriter]:
        with self.open_atomic(key) as f:
            yield _FileWriter(f)

    async def put_bytes(self, key: str, data: bytes) -> None:
        with self.open_atomic(key) as f:
            f.write(data)

    async def presign(self, key: str, ttl_s: int) -> str | None:
        return None  # a local file has no URL another machine could use

    async def rewrite(self, source: str, key: str, head: bytes, start: int, length: int) -> None:
        with self.open_read(source) as src, self.open_atomic(key) as out:
            out.write(head)
            src.seek(start)
            left = length
            while left and (block := src.read(min(left, 1 << 20))):
                out.write(block)
                left -= len(block)
        self._path(source).unlink(missing_ok=True)

    def open_atomic(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        # One fixed temp name per key: a worker killed mid-write leaves it behind and the
        # job's next run truncates it (only one run of a job holds arq's in-progress key at a
        # time), with no directory listing, however many outputs share the folder.
        return self._atomic(key, ".tmp")

    @contextlib.contextmanager
    def _atomic(self, key: str, tmp_suffix: str) -> Iterator[BinaryIO]:
        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}{tmp_suffix}")
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
