"""Object storage through obstore (Rust ``object_store``): S3 and S3-compatible, GCS, Azure, memory.

``MIMOQ_STORAGE_URL=s3://bucket/prefix`` (or ``gs://``, ``az://container/prefix``,
``memory://name/prefix``). Credentials, region and endpoint come from the usual
environment variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``,
``AWS_ENDPOINT``, ``AWS_ALLOW_HTTP``; ``GOOGLE_*``; ``AZURE_*``), read by obstore itself.

Streamed writes are multipart uploads with one part buffered at a time (``part_bytes``),
so memory stays near one part whatever the object's size; the object appears only when
the upload completes, and a failed stream aborts it.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, BinaryIO, Final, cast
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import BaseError
from obstore.store import MemoryStore, from_url

from mimoq.core.inputs import local_path
from mimoq.core.settings import Settings
from mimoq.core.storage import LocalStorage, Storage, StreamWriter, check_key

if TYPE_CHECKING:
    from obstore.store import AzureStore, GCSStore, ObjectStore, S3Store

#: Schemes obstore serves here (``file://`` stays with LocalStorage: it fsyncs).
OBJECT_STORE_SCHEMES: Final = frozenset({"s3", "gs", "az", "memory"})
_PRESIGNABLE: Final = frozenset({"s3", "gs", "az"})
_READ_BUFFER: Final = 1 << 20
_UPLOAD_CONCURRENCY: Final = 1  # one part in flight while the next fills: memory ~2 parts

# Process-wide: a memory:// store must be the same object for the producer and the worker
# of one process (the embedded mode, tests), as a bucket would be.
_MEMORY: dict[str, MemoryStore] = {}
_STORES: dict[str, ObjectStore] = {}
_LOCK = threading.Lock()


def split_url(url: str) -> tuple[str, str, str]:
    """``s3://bucket/a/b`` → ``("s3", "bucket", "a/b")`` (scheme lower-cased, no slashes)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in OBJECT_STORE_SCHEMES or not parts.netloc:
        raise ValueError(f"{url!r} is not an s3://, gs://, az:// or memory:// URL with a bucket")
    return scheme, parts.netloc, parts.path.strip("/")


def store_for(scheme: str, bucket: str) -> ObjectStore:
    """One store per bucket per process, configured from the environment by obstore."""
    root = f"{scheme}://{bucket}"
    with _LOCK:
        if scheme == "memory":
            return _MEMORY.setdefault(bucket, MemoryStore())
        store = _STORES.get(root)
        if store is None:
            store = _STORES[root] = from_url(root)
        return store


class _UploadWriter:
    def __init__(self, upload: Any) -> None:
        self._upload = upload

    async def write(self, data: bytes) -> None:
        await self._upload.write(data)


class ObjectStorage:
    """A bucket (and prefix) behind the ``Storage`` protocol."""

    def __init__(self, url: str, *, part_bytes: int = 5 << 20) -> None:
        self.scheme, self.bucket, self.prefix = split_url(url)
        self.base_url = f"{self.scheme}://{self.bucket}" + (
            f"/{self.prefix}" if self.prefix else ""
        )
        self.part_bytes = part_bytes
        self.store = store_for(self.scheme, self.bucket)

    def path(self, key: str) -> str:
        """The object's path in the bucket."""
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def url(self, key: str) -> str:
        return f"{self.scheme}://{self.bucket}/{self.path(key)}"

    def locate(self, key: str) -> str:
        return self.url(key)

    def is_local(self) -> bool:
        return False

    def key_of(self, url: str) -> str | None:
        """The key of an object URL inside this storage, or None if it lies elsewhere."""
        base = self.base_url + "/"
        if not url.startswith(base):
            return None
        key = url[len(base) :]
        try:
            return check_key(key)
        except ValueError:
            return None

    def exists(self, key: str) -> bool:
        try:
            obstore.head(self.store, self.path(key))
        except FileNotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        return int(obstore.head(self.store, self.path(key))["size"])

    def copy(self, source: str, key: str) -> None:
        # Server-side (S3 CopyObject, GCS rewrite, Azure copy blob): no byte passes through
        # this process, which may be on another host than the workers that wrote ``source``.
        try:
            obstore.copy(self.store, self.path(source), self.path(key))
        except FileNotFoundError:
            raise
        except BaseError as exc:  # credentials, network, a store without copy: say which
            raise OSError(f"cannot copy {self.url(source)} to {self.url(key)}: {exc}") from None

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        reader = obstore.open_reader(self.store, self.path(key), buffer_size=_READ_BUFFER)
        try:
            yield cast(BinaryIO, reader)
        finally:
            reader.close()

    def put_file(self, key: str, source: BinaryIO) -> None:
        obstore.put(
            self.store, self.path(key), source, chunk_size=self.part_bytes,
            max_concurrency=_UPLOAD_CONCURRENCY + 1,
        )  # fmt: skip

    @contextlib.contextmanager
    def open_atomic(self, key: str) -> Iterator[BinaryIO]:
        # Writers that seek back (chunk files, stitched outputs patch their WAV header) get a
        # local temporary file, uploaded once complete; TTS output streams instead.
        with tempfile.TemporaryFile(prefix="mimoq-upload-") as f:
            yield cast(BinaryIO, f)
            f.flush()
            f.seek(0)
            self.put_file(key, cast(BinaryIO, f))

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            obstore.delete(self.store, self.path(check_key(key)))

    def delete_prefix(self, prefix: str) -> None:
        base = self.path(check_key(prefix)) + "/"
        for batch in obstore.list(self.store, prefix=base, chunk_size=1000):
            paths = [meta["path"] for meta in batch]
            if paths:
                obstore.delete(self.store, paths)

    @contextlib.asynccontextmanager
    async def stream(self, key: str) -> AsyncIterator[StreamWriter]:
        # obstore's writer completes the multipart upload on a clean exit and aborts it when
        # the block raises (or is cancelled): no partial object is ever visible.
        async with obstore.open_writer_async(
            self.store, self.path(key), buffer_size=self.part_bytes,
            max_concurrency=_UPLOAD_CONCURRENCY,
        ) as upload:  # fmt: skip
            yield _UploadWriter(upload)

    async def put_bytes(self, key: str, data: bytes) -> None:
        await obstore.put_async(self.store, self.path(key), data)

    async def rewrite(self, source: str, key: str, head: bytes, start: int, length: int) -> None:
        if length:
            result = await obstore.get_async(
                self.store, self.path(source), options={"range": (start, start + length)}
            )
        async with self.stream(key) as out:
            await out.write(head)
            if length:
                async for chunk in result.stream(min_chunk_size=1 << 20):
                    await out.write(bytes(chunk))
        await obstore.delete_async(self.store, self.path(source))

    async def presign(self, key: str, ttl_s: int) -> str | None:
        if self.scheme not in _PRESIGNABLE:
            return None
        store = cast("S3Store | GCSStore | AzureStore", self.store)
        url: str = await obstore.sign_async(store, "GET", self.path(key), timedelta(seconds=ttl_s))
        return url


def open_storage(settings: Settings) -> Storage:
    """The storage ``MIMOQ_STORAGE_URL`` names (default: the data directory, locally)."""
    location = settings.storage.location()
    if location.lower().startswith("file://"):
        return LocalStorage(local_path(location, "MIMOQ_STORAGE_URL"))
    return ObjectStorage(location, part_bytes=settings.storage.part_bytes)
