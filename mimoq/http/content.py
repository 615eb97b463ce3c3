"""Where the front door keeps uploads and finds outputs: the one place that knows storage.

Uploads are received into the server's data directory; with shared (object) storage they
are then copied into the store under ``inputs/<sha256>`` so that a worker on any host can
read them. Outputs are read through the result record and the ``Storage`` protocol: a local
file is served as a file (with Range), an object is streamed from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

from starlette.responses import FileResponse, Response, StreamingResponse

from mimoq.core.jobs import JobResult
from mimoq.core.settings import Settings
from mimoq.core.staging import stage_file
from mimoq.core.storage import LocalStorage, Storage
from mimoq.http.http_errors import HTTPError

UPLOADS_PREFIX: Final = "uploads"
#: An object-store output is streamed to the client in reads of this size.
_STREAM_BYTES: Final = 1 << 20
MEDIA_TYPES: Final = {
    "wav": "audio/wav",
    "pcm": "audio/pcm",
    "json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}


def upload_key(job_id: str, suffix: str) -> str:
    return f"{UPLOADS_PREFIX}/{job_id}{suffix}"


def upload_path(settings: Settings, key: str) -> Path:
    """The local path a worker reads an uploaded input from (the data directory is shared)."""
    return Path(LocalStorage(settings.storage.data_dir).locate(key))


async def share_upload(storage: Storage, path: Path, param: str) -> str:
    """The reference a job carries for an upload at ``path`` on this server.

    Local storage is the data directory the workers read: the path itself. Shared storage:
    the file is copied into the store (content-addressed, once) and removed here, so any
    worker anywhere reads it by its URL.
    """
    if storage.is_local():
        return str(path)
    return await asyncio.to_thread(_stage_and_remove, storage, path, param)


def _stage_and_remove(storage: Storage, path: Path, param: str) -> str:
    ref = stage_file(storage, path, param)
    path.unlink(missing_ok=True)
    return ref


async def output_response(settings: Settings, storage: Storage, result: JobResult) -> Response:
    """The finished job's output, with its content type: a local file (Range supported), or
    an object streamed from the store."""
    if result.output is None:
        raise HTTPError(404, f"job {result.id} has no output", code="no_output")
    key = result.output.key
    # An output format this version does not know is still served, as bytes.
    media_type = MEDIA_TYPES.get(result.output.format, "application/octet-stream")
    if storage.is_local():
        path = Path(storage.locate(key))
        if not await asyncio.to_thread(path.is_file):
            raise _gone(result)
        return FileResponse(path, media_type=media_type)
    if not await asyncio.to_thread(storage.exists, key):
        raise _gone(result)
    return StreamingResponse(_object_chunks(storage, key), media_type=media_type)


def _gone(result: JobResult) -> HTTPError:
    return HTTPError(
        404, f"the output of job {result.id} is no longer in storage", code="output_gone"
    )


async def _object_chunks(storage: Storage, key: str) -> AsyncIterator[bytes]:
    # The store's reader blocks: every read runs in a thread, one part at a time.
    with contextlib.ExitStack() as stack:
        reader = await asyncio.to_thread(stack.enter_context, storage.open_read(key))
        while chunk := await asyncio.to_thread(reader.read, _STREAM_BYTES):
            yield bytes(chunk)  # the store's reader gives a buffer object, not bytes
