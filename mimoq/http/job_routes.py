"""``GET /v1/jobs/{id}``, ``GET /v1/jobs/{id}/content`` and ``POST /v1/jobs/{id}/cancel``:
a tenant's own jobs only."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mimoq.core.jobs import JobResult
from mimoq.http.content import output_response
from mimoq.http.http_errors import HTTPError, job_failure
from mimoq.http.routing import Context
from mimoq.producer.cancel import CancelStatus, cancel_jobs


async def _owned_id(request: Request, ctx: Context, tenant: str) -> str:
    job_id = str(request.path_params["job_id"])
    # Another tenant's job and no job at all read the same: ids are not probed.
    if not await ctx.front.owned(job_id, tenant):
        raise HTTPError(404, f"no job {job_id!r}", param="id", code="job_not_found")
    return job_id


def result_view(result: JobResult) -> dict[str, Any]:
    """The result record as HTTP callers see it: the output by URL, not by server path."""
    view = result.model_dump(mode="json")
    if isinstance(view.get("output"), dict):
        view["output"].pop("path", None)
        view["output"]["url"] = f"/v1/jobs/{result.id}/content"
    return view


async def job(request: Request, ctx: Context, tenant: str) -> Response:
    job_id = await _owned_id(request, ctx, tenant)
    report = await ctx.front.status(job_id)
    if report.result is not None:
        return JSONResponse({"object": "job", **result_view(report.result)})
    return JSONResponse({"object": "job", **report.to_dict()})


async def content(request: Request, ctx: Context, tenant: str) -> Response:
    job_id = await _owned_id(request, ctx, tenant)
    report = await ctx.front.status(job_id)
    if report.result is None:
        raise HTTPError(
            409,
            f"job {job_id} is {report.status.value}, not finished: poll GET /v1/jobs/{job_id}",
            code="job_not_finished",
        )
    if report.result.status != "succeeded":
        raise job_failure(report.result.error, job_id)
    return await output_response(ctx.settings, ctx.storage, report.result)


async def cancel(request: Request, ctx: Context, tenant: str) -> Response:
    """Cancel the tenant's job (docs/cancel.md): the answer of ``mimoq cancel``, as an
    object; another tenant's job, like an unknown one, is a 404."""
    job_id = await _owned_id(request, ctx, tenant)
    answer = (await cancel_jobs(ctx.front.producer.redis, [job_id], settings=ctx.settings))[0]
    if answer.status is CancelStatus.not_found:  # its record expired since the owner check
        raise HTTPError(404, f"no job {job_id!r}", param="id", code="job_not_found")
    return JSONResponse({"object": "job.cancel", **answer.to_dict()})
