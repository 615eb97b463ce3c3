"""Where the front door keeps uploads and finds outputs: the one place that knows storage.

Outputs are read through the result record and the ``Storage`` protocol's ``locate``, so a
move to another storage backend changes this module only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from starlette.responses import FileResponse, Response

from mimoq.core.jobs import JobResult
from mimoq.core.settings import Settings
from mimoq.core.storage import LocalStorage
from mimoq.http.errors import HTTPError

UPLOADS_PREFIX: Final = "uploads"
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


def output_response(settings: Settings, result: JobResult) -> Response:
    """The finished job's output file, streamed with its content type (Range supported)."""
    if result.output is None:
        raise HTTPError(404, f"job {result.id} has no output", code="no_output")
    path = Path(LocalStorage(settings.storage.data_dir).locate(result.output.key))
    if not path.is_file():
        raise HTTPError(
            404, f"the output of job {result.id} is no longer in storage", code="output_gone"
        )
    # An output format this version does not know is still served, as bytes.
    media_type = MEDIA_TYPES.get(result.output.format, "application/octet-stream")
    return FileResponse(path, media_type=media_type)
