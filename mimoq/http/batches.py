"""OpenAI Batch API over the queue: ``POST /v1/batches``, ``GET /v1/batches/{id}``,
``POST /v1/batches/{id}/cancel``.

Each line of the input file becomes a bulk-lane job of the tenant. Progress is read from
the jobs' result records whenever the batch is asked about; once every job has its
result (or, after a cancel, is no longer queued or running), the output and error files
are written once, under a lock, and the batch is ``completed`` or ``cancelled``.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import Callable
from typing import Any, Final

import structlog
from pydantic import ValidationError
from redis.exceptions import WatchError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mimoq.core import run_events, runs, wire
from mimoq.core.errors import InvalidRequestError
from mimoq.core.jobs import Callback, JobResult
from mimoq.core.ssrf import check_callback_url
from mimoq.http import batch_lines as lines
from mimoq.http.audio_routes import json_object
from mimoq.http.content import share_upload
from mimoq.http.files import file_path, owned_file, save_record
from mimoq.http.http_errors import HTTPError
from mimoq.http.remote_audio import fetch_audio, is_remote
from mimoq.http.routing import Context
from mimoq.producer.cancel import CancelStatus, cancel_jobs

COMPLETION_WINDOW: Final = "24h"
#: Audio URLs of one batch fetched at once (each is a download into the uploads).
FETCH_CONCURRENCY: Final = 4
#: Requests of one batch checked and enqueued at once (a big file must not flood Redis).
SUBMIT_CONCURRENCY: Final = 32
#: A batch's submitter renews this lease as it goes; a retrieve restarts one whose lease ran out.
LEASE_S: Final = 60
_PAGE: Final = 500
log = structlog.get_logger("mimoq.http")

Item = list[Any]  # [custom_id, job_id, refusal error or None]


def _key(batch_id: str) -> str:
    return wire.HTTP_BATCH_PREFIX + batch_id


def _items_key(batch_id: str) -> str:
    return wire.HTTP_BATCH_PREFIX + batch_id + ":items"


def batch_object(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("tenant", "callback")}


async def _answer(request: Request, ctx: Context, record: dict[str, Any]) -> Response:
    """The batch object, with ``expected_completion_at`` (unix seconds): while it runs, the
    ETA of its run (the fleet's grant rate and its share among the tenants, see "Runs");
    once it ended, when it did; None while it is validated or when the ETA is unknown."""
    body = batch_object(record)
    expected = record.get("completed_at") or record.get("cancelled_at") or record.get("failed_at")
    fleet = getattr(request.app.state, "fleet", None)
    running = record["status"] in ("in_progress", "cancelling")
    if expected is None and running and fleet is not None and fleet.progress is not None:
        progress = await fleet.progress(ctx.front.producer.redis, record["id"])
        at = progress.get("eta_at") if progress else None
        expected = math.ceil(at) if isinstance(at, int | float) else None
    body["expected_completion_at"] = expected
    return JSONResponse(body)


async def _save(ctx: Context, record: dict[str, Any]) -> None:
    ttl = ctx.settings.storage.result_ttl_s + 86_400
    await ctx.front.producer.redis.set(_key(record["id"]), json.dumps(record), ex=ttl)


async def _update(
    ctx: Context, batch_id: str, change: Callable[[dict[str, Any]], bool]
) -> dict[str, Any] | None:
    """Read-modify-write of a batch record under WATCH: a cancel and the submitter (or the
    finalizer) never overwrite each other's status. ``change`` edits the record in place and
    says whether to write it; the record as stored afterwards is returned."""
    ttl = ctx.settings.storage.result_ttl_s + 86_400
    async with ctx.front.producer.redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(_key(batch_id))
                raw = await pipe.get(_key(batch_id))
                if raw is None:
                    return None
                current: dict[str, Any] = json.loads(raw)
                if not change(current):
                    return current  # leaving the block resets the pipeline (and the WATCH)
                pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
                pipe.set(_key(batch_id), json.dumps(current), ex=ttl)
                await pipe.execute()
                return current
            except WatchError:
                continue  # someone else wrote it first: decide again on what they wrote


async def _owned(ctx: Context, batch_id: str, tenant: str) -> dict[str, Any]:
    raw = await ctx.front.producer.redis.get(_key(batch_id))
    record: dict[str, Any] | None = json.loads(raw) if raw is not None else None
    if record is None or record.get("tenant") != tenant:
        raise HTTPError(404, f"no batch {batch_id!r}", param="batch_id", code="batch_not_found")
    return record


def _check_lines(ctx: Context, file_id: str, endpoint: str) -> list[dict[str, Any]]:
    """First pass (blocking, in a thread): the reasons the file is not a batch, if any.

    Only the custom ids are kept, never the bodies: a large file is read twice rather than
    held in memory."""
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    with file_path(ctx, file_id).open("r", encoding="utf-8-sig", errors="replace") as f:
        for number, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                custom_id, _ = lines.parse_line(text, number, endpoint)
                if custom_id in seen:
                    raise lines.LineError(
                        number, f"line {number}: custom_id {custom_id!r} is repeated", "custom_id"
                    )
            except lines.LineError as exc:
                if len(errors) < lines.MAX_LINE_ERRORS:
                    errors.append(exc.to_dict())
                continue
            seen.add(custom_id)
    if not seen and not errors:
        errors.append(
            {"code": "empty_file", "message": "the input file has no requests", "param": None,
             "line": None}
        )  # fmt: skip
    return errors


def _next_requests(
    f: Any, endpoint: str, start: int, count: int
) -> list[tuple[int, str, dict[str, Any]]]:
    """Second pass (blocking): the next ``count`` requests as (line number, custom_id, body)."""
    out: list[tuple[int, str, dict[str, Any]]] = []
    number = start
    while len(out) < count:
        text = f.readline()
        if not text:
            break
        number += 1
        if text.strip():
            custom_id, body = lines.parse_line(text, number, endpoint)  # checked in pass 1
            out.append((number, custom_id, body))
    return out


def _lease_key(batch_id: str) -> str:
    return _key(batch_id) + ":submitting"


async def _withdraw(ctx: Context, batch_id: str, job_ids: list[str]) -> int:
    """Cancel the batch's unfinished jobs as ``mimoq batch cancel`` does (docs/cancel.md):
    queued ones are recorded as cancelled at once (through the one finish path, which counts
    them in the batch's run and announces its end) and never sent; running ones are stopped.
    Answers how many were cancelled now or before."""
    answers = await cancel_jobs(ctx.front.producer.redis, job_ids, settings=ctx.settings)
    return sum(1 for answer in answers if answer.status is CancelStatus.cancelled)


async def _status_now(ctx: Context, batch_id: str) -> str:
    raw = await ctx.front.producer.redis.get(_key(batch_id))
    return str(json.loads(raw)["status"]) if raw is not None else "expired"


async def _submit_all(ctx: Context, record: dict[str, Any]) -> None:
    """Validate the input file and enqueue one bulk job per line, in the background.

    Job ids are the batch's id and the request's position, so a submission cut short (the
    server stopped) is simply run again by the next retrieve: enqueueing is idempotent."""
    batch_id, endpoint, tenant = record["id"], record["endpoint"], record["tenant"]
    redis = ctx.front.producer.redis
    errors = await asyncio.to_thread(_check_lines, ctx, record["input_file_id"], endpoint)
    if errors:

        def failed(current: dict[str, Any]) -> bool:
            current.update(status="failed", failed_at=int(time.time()),
                           errors={"object": "list", "data": errors})  # fmt: skip
            return True

        await _update(ctx, batch_id, failed)
        await redis.delete(_lease_key(batch_id))
        return
    await runs.begin(redis, batch_id, tenant=tenant, priority="bulk",
                     callback=record.get("callback"))  # fmt: skip
    fetching = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def submit_one(number: int, custom_id: str, req: dict[str, Any]) -> Item:
        job_id = f"{batch_id}-{number:06d}"
        fetched = None
        try:
            job = lines.job_of(endpoint, req, job_id)
            job["run"] = batch_id  # the batch's progress and ETA are its run's (core.runs)
            if is_remote(job.get("file")):
                async with fetching:
                    fetched = await fetch_audio(ctx.settings, job["file"], job_id)
                job["file"] = await share_upload(ctx.storage, fetched, "file")
            await ctx.front.submit(job, tenant=tenant, lane="bulk")
            return [custom_id, job_id, None]
        except InvalidRequestError as exc:  # one bad request fails alone, as at OpenAI
            if fetched is not None:
                fetched.unlink(missing_ok=True)
            error = exc.to_dict()
            if fetched is not None:  # the caller knows the audio by its URL, not our path
                error["message"] = exc.message.replace(str(fetched), "the fetched audio")
            return [custom_id, job_id, error]

    items: list[Item] = []
    cancelled = False
    with file_path(ctx, record["input_file_id"]).open(
        "r", encoding="utf-8-sig", errors="replace"
    ) as f:
        line = 0
        while chunk := await asyncio.to_thread(
            _next_requests, f, endpoint, line, SUBMIT_CONCURRENCY
        ):
            line = chunk[-1][0]
            await redis.set(_lease_key(batch_id), "1", ex=LEASE_S)
            cancelled = cancelled or await _status_now(ctx, batch_id) == "cancelling"
            if cancelled:  # the rest are never enqueued: they end as batch_cancelled
                items += [[c, f"{batch_id}-{n:06d}", None] for n, c, _ in chunk]
                continue
            items += await asyncio.gather(*(submit_one(n, c, r) for n, c, r in chunk))
    await redis.set(
        _items_key(batch_id), json.dumps(items), ex=ctx.settings.storage.result_ttl_s + 86_400
    )

    def submitted(current: dict[str, Any]) -> bool:
        if current["status"] != "cancelling":
            current["status"] = "in_progress"
        current["in_progress_at"] = int(time.time())
        current["request_counts"]["total"] = len(items)
        return True

    stored = await _update(ctx, batch_id, submitted)
    # refused lines never became jobs: the run counts them as failed (as request_counts do)
    await runs.count_refused(redis, batch_id, sum(1 for item in items if item[2] is not None))
    cancelled = stored is not None and stored["status"] == "cancelling"
    ended = cancelled and await runs.mark_cancelling(redis, batch_id)  # while we worked
    if ended or await runs.seal(redis, batch_id):  # nothing was left to run: it ended here
        await run_events.announce_end(redis, batch_id)
    if cancelled:
        await _withdraw(ctx, batch_id, [item[1] for item in items if item[2] is None])
    await redis.delete(_lease_key(batch_id))


def _start(request: Request, ctx: Context, record: dict[str, Any]) -> None:
    """Run the submission as a task of the app (kept referenced until it ends)."""
    tasks: set[asyncio.Task[None]] = request.app.state.background
    task = asyncio.create_task(_submit_all(ctx, record))
    tasks.add(task)

    def done(finished: asyncio.Task[None]) -> None:
        tasks.discard(finished)
        if not finished.cancelled() and finished.exception() is not None:
            # The lease runs out and the next retrieve starts the submission again.
            log.error("http.batch_submit_failed", batch_id=record["id"],
                      error=repr(finished.exception()))  # fmt: skip

    task.add_done_callback(done)


async def _batch_callback(ctx: Context, raw: object) -> dict[str, Any] | None:
    """mimoq's extension of ``POST /v1/batches``: ``callback`` ({"url", "headers"}, as a
    job's) gets one signed ``batch.completed`` / ``batch.cancelled`` event when it ends."""
    if raw is None:
        return None
    try:
        callback = Callback.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in ("callback", *first["loc"]))
        raise InvalidRequestError(
            f'{where}: {first["msg"]} (callback is {{"url": "https://…", "headers": {{…}}}})',
            param="callback",
        ) from None
    await check_callback_url(callback.url, ctx.settings)
    return callback.model_dump(mode="json")


async def create(request: Request, ctx: Context, tenant: str) -> Response:
    body = await json_object(request, ctx)
    endpoint = body.get("endpoint")
    if endpoint not in lines.ENDPOINTS:
        raise InvalidRequestError(
            f"endpoint {endpoint!r} is not served here: use {' or '.join(lines.ENDPOINTS)}",
            param="endpoint",
        )
    if body.get("completion_window", COMPLETION_WINDOW) != COMPLETION_WINDOW:
        raise InvalidRequestError("completion_window must be '24h'", param="completion_window")
    file_id = body.get("input_file_id")
    if not isinstance(file_id, str):
        raise InvalidRequestError(
            "input_file_id is required (from POST /v1/files)", param="input_file_id"
        )
    await owned_file(ctx, file_id, tenant)
    callback = await _batch_callback(ctx, body.get("callback"))
    now = int(time.time())
    batch_id = "batch_" + uuid.uuid4().hex
    record: dict[str, Any] = {
        "id": batch_id, "object": "batch", "endpoint": endpoint, "errors": None,
        "input_file_id": file_id, "completion_window": COMPLETION_WINDOW, "status": "validating",
        "output_file_id": None, "error_file_id": None, "created_at": now,
        "in_progress_at": None, "expires_at": now + 86_400, "finalizing_at": None,
        "completed_at": None, "failed_at": None, "expired_at": None, "cancelling_at": None,
        "cancelled_at": None, "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "metadata": body.get("metadata"), "tenant": tenant, "callback": callback,
    }  # fmt: skip
    await _save(ctx, record)
    await ctx.front.producer.redis.set(_lease_key(batch_id), "1", ex=LEASE_S)
    # Answer at once (as OpenAI does, "validating"): a large file, or audio to fetch by URL,
    # must not hold the request until a client's timeout makes it send the batch again.
    _start(request, ctx, dict(record))
    return await _answer(request, ctx, record)


async def _results(ctx: Context, job_ids: list[str]) -> list[JobResult | None]:
    out: list[JobResult | None] = []
    for start in range(0, len(job_ids), _PAGE):
        page = job_ids[start : start + _PAGE]
        raws = await ctx.front.producer.redis.mget([wire.result_key(j) for j in page])
        out.extend(None if raw is None else JobResult.model_validate_json(raw) for raw in raws)
    return out


async def _still_active(ctx: Context, job_ids: list[str]) -> bool:
    """Whether any of these jobs is queued or running (after a cancel, the rest never will)."""
    redis = ctx.front.producer.redis
    for start in range(0, len(job_ids), _PAGE):
        page = job_ids[start : start + _PAGE]
        async with redis.pipeline(transaction=False) as pipe:
            for job_id in page:
                pipe.exists(wire.in_progress_key(job_id))
                pipe.zscore(wire.QUEUE_NAME, job_id)
            answers = await pipe.execute()
        if any(answers[i] or answers[i + 1] is not None for i in range(0, len(answers), 2)):
            return True
    return False


async def _refresh(ctx: Context, record: dict[str, Any]) -> dict[str, Any]:
    """Count finished requests; finalize once nothing is left to wait for."""
    if record["status"] not in ("in_progress", "cancelling"):
        return record
    if await ctx.front.producer.redis.exists(_lease_key(record["id"])):
        return record  # cancelled while its lines were being enqueued: the submitter finishes
    raw = await ctx.front.producer.redis.get(_items_key(record["id"]))
    items: list[Item] = json.loads(raw) if raw is not None else []
    queued = [item for item in items if item[2] is None]
    results = await _results(ctx, [item[1] for item in queued])
    by_id = {item[1]: r for item, r in zip(queued, results, strict=True)}
    completed = sum(1 for r in results if r is not None and r.status == "succeeded")
    failed = sum(1 for r in results if r is not None and r.status == "failed")
    failed += len(items) - len(queued)
    record["request_counts"] = {"total": len(items), "completed": completed, "failed": failed}
    waiting = [job_id for job_id, r in by_id.items() if r is None]
    if waiting and (record["status"] == "in_progress" or await _still_active(ctx, waiting)):
        return record
    lock = f"{_key(record['id'])}:finalizing"
    if not await ctx.front.producer.redis.set(lock, "1", nx=True, ex=60):
        return record  # another request is writing the files right now
    await _finalize(ctx, record, items, by_id)
    return record


async def _finalize(
    ctx: Context, record: dict[str, Any], items: list[Item], by_id: dict[str, JobResult | None]
) -> None:
    now = int(time.time())
    cancelled = record["status"] == "cancelling"
    output: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for custom_id, job_id, refusal in items:
        result = by_id.get(job_id)
        if refusal is not None:
            errors.append(lines.refused_line(custom_id, job_id, refusal))
        elif result is None or result.status == "cancelled":
            message = "the batch was cancelled before this request ran"
            errors.append(lines.not_run_line(custom_id, job_id, "batch_cancelled", message))
        elif result.status == "succeeded":
            output.append(lines.success_line(custom_id, result))
        else:
            errors.append(lines.failure_line(custom_id, result))
    for name, rows in (("output_file_id", output), ("error_file_id", errors)):
        if not rows:
            continue
        file_id = f"file-{record['id']}-{name.split('_')[0]}"
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        path = file_path(ctx, file_id)
        await asyncio.to_thread(_write, path, text)
        await save_record(ctx, {
            "id": file_id, "object": "file", "bytes": len(text.encode()), "created_at": now,
            "filename": f"{record['id']}_{name.split('_')[0]}.jsonl", "purpose": "batch_output",
            "status": "processed", "tenant": record["tenant"],
        })  # fmt: skip
        record[name] = file_id
    was = record["status"]
    record.update(finalizing_at=now)
    if cancelled:
        record.update(status="cancelled", cancelled_at=now)
    else:
        record.update(status="completed", completed_at=now)

    def finished(current: dict[str, Any]) -> bool:
        if current["status"] != was:  # a cancel came in meanwhile: the next retrieve decides
            return False
        current.update(record)
        return True

    stored = await _update(ctx, record["id"], finished)
    if stored is not None:
        record.clear()
        record.update(stored)


def _write(path: Any, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


async def retrieve(request: Request, ctx: Context, tenant: str) -> Response:
    record = await _owned(ctx, request.path_params["batch_id"], tenant)
    if record["status"] == "validating" and await ctx.front.producer.redis.set(
        _lease_key(record["id"]), "1", ex=LEASE_S, nx=True
    ):
        _start(request, ctx, record)  # its submitter stopped (lease gone): go on from here
    return await _answer(request, ctx, await _refresh(ctx, record))


async def cancel_batch(ctx: Context, batch_id: str) -> tuple[dict[str, Any], int] | None:
    """Cancel an HTTP batch: its record goes to ``cancelling`` (then ``cancelled`` once nothing
    runs), its run is marked so it ends as ``batch.cancelled``, and its unfinished jobs are
    withdrawn. The route and the dashboard's runs panel both cancel through here, so a batch
    ends the same whoever cancels it. Answers the stored record and how many jobs were
    cancelled now; None for no such batch; an HTTP 409 (``batch_finished``) if it ended."""
    before: list[str] = []

    def cancelling(current: dict[str, Any]) -> bool:
        before[:] = [current["status"]]
        if current["status"] not in ("validating", "in_progress"):
            return False
        current.update(status="cancelling", cancelling_at=int(time.time()))
        return True

    stored = await _update(ctx, batch_id, cancelling)
    if stored is None:
        return None
    if before[0] in ("completed", "failed", "cancelled", "expired"):
        raise HTTPError(409, f"batch {batch_id} is already {before[0]}", code="batch_finished")
    withdrawn = 0
    if before == ["in_progress"]:  # (while validating, the submitter withdraws what it did)
        if await runs.mark_cancelling(ctx.front.producer.redis, batch_id):
            await run_events.announce_end(ctx.front.producer.redis, batch_id)
        raw = await ctx.front.producer.redis.get(_items_key(batch_id))
        items: list[Item] = json.loads(raw) if raw is not None else []
        withdrawn = await _withdraw(ctx, batch_id, [item[1] for item in items if item[2] is None])
    return stored, withdrawn


async def is_batch(ctx: Context, batch_id: str) -> bool:
    """Whether ``batch_id`` names an HTTP batch (whose run is cancelled as the batch)."""
    return bool(await ctx.front.producer.redis.exists(_key(batch_id)))


async def cancel(request: Request, ctx: Context, tenant: str) -> Response:
    record = await _owned(ctx, request.path_params["batch_id"], tenant)
    if record["status"] in ("completed", "failed", "cancelled", "expired"):
        raise HTTPError(409, f"batch {record['id']} is already {record['status']}",
                        code="batch_finished")  # fmt: skip
    done = await cancel_batch(ctx, record["id"])
    return await _answer(request, ctx, await _refresh(ctx, done[0] if done else record))
