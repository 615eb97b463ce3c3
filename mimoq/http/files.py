"""OpenAI-style files: ``POST /v1/files`` (purpose ``batch``), ``GET /v1/files/{id}`` and
``/content``. Inputs are uploaded by tenants; batch output and error files are written by
the server. The bytes live under ``MIMOQ_DATA_DIR/files/``, the description in Redis."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from mimoq.core import wire
from mimoq.core.errors import InvalidRequestError
from mimoq.http.content import upload_path
from mimoq.http.http_errors import HTTPError
from mimoq.http.multipart import receive_form
from mimoq.http.routing import Context


def file_key(file_id: str) -> str:
    return f"files/{file_id}.jsonl"


def _record_key(file_id: str) -> str:
    return wire.HTTP_FILE_PREFIX + file_id


def file_object(record: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI ``file`` object (the tenant stays server-side)."""
    return {k: v for k, v in record.items() if k != "tenant"}


async def save_record(ctx: Context, record: dict[str, Any]) -> None:
    await ctx.front.producer.redis.set(
        _record_key(record["id"]), json.dumps(record), ex=ctx.settings.storage.result_ttl_s + 86_400
    )


async def owned_file(ctx: Context, file_id: str, tenant: str) -> dict[str, Any]:
    """A tenant's file record; 404 for another tenant's exactly as for none."""
    raw = await ctx.front.producer.redis.get(_record_key(file_id))
    record: dict[str, Any] | None = json.loads(raw) if raw is not None else None
    if record is None or record.get("tenant") != tenant:
        raise HTTPError(404, f"no file {file_id!r}", param="file_id", code="file_not_found")
    return record


def file_path(ctx: Context, file_id: str) -> Path:
    return upload_path(ctx.settings, file_key(file_id))


async def create(request: Request, ctx: Context, tenant: str) -> Response:
    file_id = "file-" + uuid.uuid4().hex
    final = file_path(ctx, file_id)
    partial = final.with_name(f".{final.name}.part")
    form = await receive_form(request, ctx.upload_limits, file_field="file", dest=partial)
    purpose = (form.fields.get("purpose") or [""])[-1]
    if purpose != "batch" or form.file is None or form.file.size == 0:
        partial.unlink(missing_ok=True)
        if purpose != "batch":
            raise InvalidRequestError(
                f"purpose {purpose!r} is not supported: mimoq stores files for 'batch' only",
                param="purpose",
            )
        raise InvalidRequestError("file is required: a JSONL file of batch requests", param="file")
    os.replace(partial, final)
    record = {
        "id": file_id,
        "object": "file",
        "bytes": form.file.size,
        "created_at": int(time.time()),
        "filename": form.file.filename or "input.jsonl",
        "purpose": "batch",
        "status": "processed",
        "tenant": tenant,
    }
    await save_record(ctx, record)
    return JSONResponse(file_object(record))


async def retrieve(request: Request, ctx: Context, tenant: str) -> Response:
    return JSONResponse(file_object(await owned_file(ctx, request.path_params["file_id"], tenant)))


async def content(request: Request, ctx: Context, tenant: str) -> Response:
    record = await owned_file(ctx, request.path_params["file_id"], tenant)
    path = file_path(ctx, record["id"])
    if not path.is_file():
        raise HTTPError(404, f"file {record['id']} is no longer stored", code="file_gone")
    return FileResponse(path, media_type="application/jsonl")
