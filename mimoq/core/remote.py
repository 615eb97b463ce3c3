"""Audio inputs that live elsewhere: an object store (``s3://``, ``gs://``, ``az://``) or https.

Objects inside the service's own storage are read with its store; other buckets with a
store built from the same environment credentials. ``https://`` (and ``http://``) inputs
are fetched under the callback SSRF policy (``mimoq.core.ssrf``): every resolved address
must be public unless ``MIMOQ_CALLBACK_ALLOW_NETWORKS`` allows it, the connection is pinned
to the checked address, redirects are not followed. Everything streams, capped at
``MIMOQ_INPUT_MAX_BYTES``; no error quotes a URL's path or query (they may hold tokens).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Final, cast

import httpx
import obstore
from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

from mimoq.core.errors import InvalidRequestError, RetryableError
from mimoq.core.inputs import ref_kind
from mimoq.core.objstore import ObjectStorage, split_url, store_for
from mimoq.core.settings import Settings
from mimoq.core.ssrf import CallbackDnsError, CallbackUrlRefusedError, redact_url, resolve_checked
from mimoq.core.storage import Storage

if TYPE_CHECKING:
    from obstore.store import ObjectStore

PROBE_BYTES: Final = 64 * 1024
_HTTP_TIMEOUT: Final = httpx.Timeout(60.0, connect=10.0)


class InputUnavailableError(RetryableError):
    """The input's store or server did not answer (now); a later try may succeed."""

    error_type = "input_unavailable_error"


def describe(ref: str) -> str:
    """A reference fit for messages: an object URL as is, an http URL as scheme://host:port."""
    return redact_url(ref) if ref_kind(ref) == "http" else ref.split("?", 1)[0]


def object_location(ref: str, storage: Storage | None, param: str) -> tuple[ObjectStore, str]:
    """The store and path of an object URL (the service's own storage when it lies inside)."""
    if isinstance(storage, ObjectStorage):
        key = storage.key_of(ref)
        if key is not None:
            return storage.store, storage.path(key)
    try:
        scheme, bucket, path = split_url(ref)
    except ValueError:
        raise InvalidRequestError(
            f"{param}: {describe(ref)} names no bucket", param=param
        ) from None
    if scheme == "memory" or not path:
        raise InvalidRequestError(
            f"{param}: {describe(ref)} is not an object this service can read", param=param
        )
    return store_for(scheme, bucket), path


def _object_error(exc: Exception, ref: str, param: str) -> Exception:
    if isinstance(exc, FileNotFoundError):
        return InvalidRequestError(f"{param}: {describe(ref)} does not exist", param=param)
    if isinstance(exc, PermissionDeniedError | UnauthenticatedError):
        return InvalidRequestError(
            f"{param}: the workers' credentials may not read {describe(ref)}", param=param
        )
    return InputUnavailableError(f"{param}: reading {describe(ref)} failed ({type(exc).__name__})")


async def object_size(ref: str, storage: Storage | None, param: str) -> int:
    store, path = object_location(ref, storage, param)
    try:
        meta = await obstore.head_async(store, path)
    except Exception as exc:
        raise _object_error(exc, ref, param) from None
    return int(meta["size"])


async def probe(
    ref: str, *, settings: Settings, storage: Storage | None, param: str
) -> tuple[int, bytes]:
    """The input's size and first bytes, without downloading it (object stores: HEAD + a range)."""
    if ref_kind(ref) == "object":
        size = await object_size(ref, storage, param)
        if size == 0:
            return 0, b""
        store, path = object_location(ref, storage, param)
        try:
            first = await obstore.get_range_async(store, path, start=0, end=min(size, PROBE_BYTES))
        except Exception as exc:
            raise _object_error(exc, ref, param) from None
        return size, bytes(first)
    head = bytearray()
    size = 0
    async with _http_stream(ref, settings, param) as (response, length):
        async for chunk in response.aiter_bytes():
            head += chunk[: PROBE_BYTES - len(head)]
            if len(head) >= PROBE_BYTES and length is not None:
                return length, bytes(head)  # the length is known: no need to read on
            size += len(chunk)
            _cap(size, settings, ref, param)
    return size, bytes(head)


async def download(
    ref: str, dest: Path, *, settings: Settings, storage: Storage | None, param: str
) -> int:
    """Stream the input into ``dest`` (a new file); returns its size. Capped, never buffered."""
    written = 0
    # Local writes of downloaded chunks: page-cache fast, not worth a thread hop each.
    with open(dest, "xb") as out:  # noqa: ASYNC230
        if ref_kind(ref) == "object":
            store, path = object_location(ref, storage, param)
            try:
                result = await obstore.get_async(store, path)
                _cap(result.meta["size"], settings, ref, param)
                async for chunk in result.stream(min_chunk_size=1 << 20):
                    out.write(chunk)
                    written += len(chunk)
                    _cap(written, settings, ref, param)
            except (InvalidRequestError, RetryableError):
                raise
            except Exception as exc:
                raise _object_error(exc, ref, param) from None
            return written
        async with _http_stream(ref, settings, param) as (response, _length):
            async for chunk in response.aiter_bytes():
                out.write(chunk)
                written += len(chunk)
                _cap(written, settings, ref, param)
    return written


def _cap(size: int, settings: Settings, ref: str, param: str) -> None:
    if size > settings.storage.input_max_bytes:
        raise InvalidRequestError(
            f"{param}: {describe(ref)} is larger than {settings.storage.input_max_bytes:,} bytes "
            "(MIMOQ_INPUT_MAX_BYTES)",
            param=param,
        )


@contextlib.asynccontextmanager
async def _http_stream(
    ref: str, settings: Settings, param: str
) -> AsyncIterator[tuple[httpx.Response, int | None]]:
    """GET an http(s) input pinned to its checked address; yields the response and its length."""
    where = describe(ref)
    try:
        target = await resolve_checked(ref, settings)
    except CallbackUrlRefusedError as exc:
        reason = exc.message.replace("callback.url", where, 1)
        raise InvalidRequestError(
            f"{param}: {reason} (inputs are fetched under the callback address policy)",
            param=param,
        ) from None
    except CallbackDnsError as exc:
        raise InputUnavailableError(f"{param}: {exc.message}") from None
    headers = {"Host": target.host_header, "Accept": "audio/*"}
    try:
        async with (
            httpx.AsyncClient(
                timeout=_HTTP_TIMEOUT, follow_redirects=False, trust_env=False
            ) as http,
            http.stream(
                "GET", target.connect_url, headers=headers, extensions=target.extensions()
            ) as response,
        ):
            if response.status_code >= 500 or response.status_code == 429:
                raise InputUnavailableError(
                    f"{param}: {where} answered HTTP {response.status_code}"
                )
            if response.status_code != 200:
                raise InvalidRequestError(
                    f"{param}: {where} answered HTTP {response.status_code} (redirects are "
                    "not followed: name the final URL)",
                    param=param,
                )
            raw = response.headers.get("content-length")
            length = int(raw) if raw and raw.isdigit() else None
            if length is not None:
                _cap(length, settings, ref, param)
            yield response, length
    except httpx.HTTPError as exc:
        raise InputUnavailableError(
            f"{param}: fetching {where} failed ({type(exc).__name__})"
        ) from None


def object_reader(ref: str, storage: Storage | None, param: str) -> BinaryIO:
    """An object as a seekable file read in 1 MiB ranges (blocking: for threads); the
    caller closes it."""
    store, path = object_location(ref, storage, param)
    try:
        return cast(BinaryIO, obstore.open_reader(store, path, buffer_size=1 << 20))
    except Exception as exc:
        raise _object_error(exc, ref, param) from None


@contextlib.contextmanager
def open_object(ref: str, storage: Storage | None, param: str) -> Iterator[BinaryIO]:
    """:func:`object_reader`, closed at the end of the block."""
    reader = object_reader(ref, storage, param)
    try:
        yield reader
    finally:
        reader.close()
