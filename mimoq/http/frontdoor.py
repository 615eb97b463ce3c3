"""What the HTTP handlers do with a job: enqueue it for a tenant, check who owns it, wait."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from typing import Any

from mimoq.core import wire
from mimoq.core.errors import InvalidRequestError
from mimoq.core.jobs import JobResult, JobStatus
from mimoq.core.results import StatusReport
from mimoq.core.settings import Settings
from mimoq.producer.client import Producer

#: Fields a caller of the HTTP API may not set: the server picks the id (so one tenant can
#: never name another's job) and the output key (so one cannot overwrite another's files).
SERVER_CHOSEN: tuple[str, ...] = ("id", "output", "kind", "tenant", "priority", "run")


def refuse_server_fields(body: Mapping[str, Any]) -> None:
    for name in SERVER_CHOSEN:
        if name in body:
            raise InvalidRequestError(
                f"{name} is set by the server over HTTP: remove it (the job id comes back in "
                "the answer; outputs are read through /v1/jobs/{id}/content)",
                param=name,
            )


def new_job_id() -> str:
    return uuid.uuid4().hex


_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def request_job_id(idempotency_key: str | None, *, tenant: str, route: str) -> str:
    """A fresh id, or, for an ``Idempotency-Key`` header, the same id every time the same
    tenant sends the same key to the same route (so a retried request finds its first job)."""
    if idempotency_key is None:
        return new_job_id()
    if not _IDEMPOTENCY_KEY.match(idempotency_key):
        raise InvalidRequestError(
            "the Idempotency-Key header must be 1-255 printable ASCII characters without spaces",
            param="Idempotency-Key",
        )
    digest = hashlib.sha256(f"{tenant}\n{route}\n{idempotency_key}".encode()).hexdigest()
    return "idem-" + digest[:40]


class FrontDoor:
    """The queue as the HTTP API sees it: every job belongs to the tenant that sent it."""

    def __init__(self, producer: Producer, settings: Settings) -> None:
        self.producer = producer
        self.settings = settings

    async def submit(self, job: dict[str, Any], *, tenant: str, lane: str = "interactive") -> str:
        """Validate and enqueue ``job`` (its ``id`` already chosen) as ``tenant``'s."""
        # The tenant shares its lane fairly with others (the scheduler reads these fields);
        # the owner record below is what decides who may read the job over HTTP.
        job["tenant"] = tenant
        job["priority"] = lane
        checked = await self.producer.validate(job)
        assert checked.id is not None
        # Owner first: a job is never visible to nobody, and never to the wrong tenant.
        ttl = (
            self.settings.storage.result_ttl_s + 86_400
        )  # results live this long after a day's wait
        await self.producer.redis.set(wire.owner_key(checked.id), tenant, ex=ttl)
        await self.producer.enqueue(checked)
        return checked.id

    async def owned(self, job_id: str, tenant: str) -> bool:
        owner = await self.producer.redis.get(wire.owner_key(job_id))
        return owner is not None and owner.decode() == tenant

    async def exists(self, job_id: str) -> bool:
        """Whether a job with this id is queued, running or finished."""
        return (await self.producer.status(job_id)).status is not JobStatus.not_found

    async def status(self, job_id: str) -> StatusReport:
        return await self.producer.status(job_id)

    async def wait(self, job_id: str) -> JobResult:
        return await self.producer.wait(job_id, timeout_s=self.settings.http.wait_timeout_s)
