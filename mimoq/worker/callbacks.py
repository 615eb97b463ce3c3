"""The callback delivery job: signed, retried on its own schedule, dead-lettered, never lost.

A finished job hands its callback to :func:`schedule_callback`, which serializes the body
once and enqueues a ``deliver_callback`` arq job whose id is the delivery id. Each run of
that job is one attempt: resolve and check the URL (``mimoq.core.ssrf``), POST the signed body
to the checked address, then deliver / retry (``arq.Retry``) / dead-letter, keeping the
result record's ``callback`` state current for clients that poll. httpx and DNS errors are
translated here, in one place; no other exception leaves the task.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import httpx
import structlog
from arq import Retry
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import WatchError

from mimoq.core import deadletters, wire
from mimoq.core.deadletters import DeadLetter, DeadLetterReason
from mimoq.core.jobs import Callback, CallbackPayload, CallbackState, CallbackStatus, JobResult
from mimoq.core.settings import Settings
from mimoq.core.ssrf import (
    CallbackDnsError,
    CallbackUrlRefusedError,
    Resolver,
    redact_url,
    resolve_checked,
)
from mimoq.core.webhooks import (
    MAX_DELAY_S,
    Delivery,
    Verdict,
    classify_status,
    delivery_headers,
    parse_retry_after,
    retry_delay_s,
)
from mimoq.worker import metrics

log = structlog.get_logger("mimoq.callbacks")

#: Runs allowed beyond the schedule when our own code or Redis failed (not the receiver).
_EXTRA_TRIES: Final = 3
_INTERNAL_RETRY_S: Final = 60.0
_WATCH_TRIES: Final = 10

# Like mimoq/enqueue.lua, for the callback task: write the arq job (JSON envelope, the
# delivery embedded verbatim) only if no job with this id is queued or running.
# KEYS[1] arq:job:<id>  KEYS[2] the queue  ARGV: id, task, delivery JSON, defer ms, ttl ms
_ENQUEUE_LUA: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local envelope = '{"t":null,"f":"' .. ARGV[2] .. '","a":[],"k":{"delivery":' .. ARGV[3] ..
  '},"et":' .. string.format('%d', now_ms) .. '}'
redis.call('SET', KEYS[1], envelope, 'PX', ARGV[5])
redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[4]), ARGV[1])
return 1
"""


class ReplayOutcome(StrEnum):
    enqueued = "enqueued"
    already_pending = "already_pending"  # a delivery job with this id is queued or running
    not_found = "not_found"


@dataclass(frozen=True)
class AttemptOutcome:
    """What one attempt came to; ``error`` is safe to log and to show the user."""

    verdict: Verdict
    status_code: int | None = None
    error: str | None = None
    retry_after_s: float | None = None
    refused: bool = False


# --- enqueueing ---------------------------------------------------------------------------


async def enqueue_delivery(redis: Redis, delivery: Delivery, *, defer_s: float = 0.0) -> bool:
    """Enqueue one delivery job (id = delivery id); False if one is already queued or running."""
    added = await redis.eval(  # type: ignore[misc]  # redis-py types eval as sync-or-async
        _ENQUEUE_LUA,
        2,
        wire.job_key(delivery.delivery_id),
        wire.QUEUE_NAME,
        delivery.delivery_id,
        wire.TASK_CALLBACK,
        wire.dumps(delivery.model_dump(mode="json")),
        str(int(defer_s * 1000)),
        # arq drops a job whose key expired; each retry extends it again (see _run).
        str(int((defer_s + MAX_DELAY_S) * 1000)),
    )
    return bool(added)


async def schedule_callback(
    redis: Redis, result: JobResult, callback: Callback, *, settings: Settings | None = None
) -> str:
    """Hand a finished job's callback to its own delivery job; returns the delivery id.

    The body is serialized here, once, and carried by the job: every attempt and replay
    sends the same bytes under the same ``webhook-id``. Idempotent: if the delivery job
    already exists, nothing is added. With ``settings``, the first attempt waits for the
    schedule's first entry; without, it is immediate.
    """
    delivery_id = wire.callback_job_id(result.id)
    payload = CallbackPayload.from_result(result, delivery_id)
    delivery = Delivery(
        delivery_id=delivery_id,
        job_id=result.id,
        url=callback.url,
        headers=dict(callback.headers),
        body=wire.dumps(payload.model_dump(mode="json")),
        created_at=time.time(),
    )
    defer_s = settings.callback_schedule()[0] if settings is not None else 0.0
    await enqueue_delivery(redis, delivery, defer_s=defer_s)
    return delivery_id


async def replay(redis: Redis, delivery_id: str) -> ReplayOutcome:
    """Send a dead-lettered delivery again: same id and body, a fresh schedule of attempts.

    The dead letter stays until the replay is delivered (the delivery job removes it), so a
    replay that fails again is still there, updated.
    """
    letter = await deadletters.get(redis, delivery_id)
    if letter is None:
        return ReplayOutcome.not_found
    delivery = letter.delivery.model_copy(
        update={"prior_attempts": letter.attempts, "replays": letter.delivery.replays + 1}
    )
    if not await enqueue_delivery(redis, delivery):
        return ReplayOutcome.already_pending
    state = CallbackState(
        status=CallbackStatus.pending,
        delivery_id=delivery_id,
        attempts=letter.attempts,
        last_error=letter.last_error,
    )
    await _update_state(redis, delivery.job_id, state)
    return ReplayOutcome.enqueued


# --- the arq task -------------------------------------------------------------------------


async def startup(ctx: dict[str, Any]) -> None:
    """Create the callback HTTP client (unless one was injected, e.g. by a test)."""
    if "callback_client" not in ctx:
        ctx["callback_client"] = build_client(ctx["settings"])
        ctx["callback_client_owned"] = True


async def shutdown(ctx: dict[str, Any]) -> None:
    if ctx.pop("callback_client_owned", False):
        await ctx.pop("callback_client").aclose()


def build_client(settings: Settings, *, verify: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
    """An HTTP client fit for untrusted receivers (``verify``: e.g. a test CA's context)."""
    return httpx.AsyncClient(
        verify=verify,
        timeout=httpx.Timeout(settings.callback_timeout_s),
        follow_redirects=False,  # a redirect could lead past the SSRF check
        trust_env=False,  # an environment proxy would connect for us, unchecked
        # No connection reuse: requests are pinned to an IP with the name in SNI, and a
        # pooled TLS connection verified for one name must not carry another name's request.
        limits=httpx.Limits(max_keepalive_connections=0),
    )


async def deliver_callback(ctx: dict[str, Any], delivery: dict[str, Any]) -> dict[str, Any] | None:
    """arq task ``deliver_callback``: one attempt at delivering one callback."""
    settings: Settings = ctx["settings"]
    redis: Redis = ctx["redis"]
    attempt = int(ctx.get("job_try") or 1)
    try:
        parsed = Delivery.model_validate(delivery)
    except ValidationError:
        return await _dead_letter_invalid(redis, ctx, delivery, attempt)
    try:
        return await _run(ctx, settings, redis, parsed, attempt)
    except Retry:
        raise
    except Exception as exc:  # our bug or Redis trouble: retry, never fail silently in arq
        delay = _retry_delay(settings, attempt, None)
        if delay is None and attempt < len(settings.callback_schedule()) + _EXTRA_TRIES:
            delay = _INTERNAL_RETRY_S
        log.error(
            "callback.internal_error",
            job_id=parsed.job_id,
            delivery_id=parsed.delivery_id,
            attempt=attempt,
            error=type(exc).__name__,
            next_attempt_in_s=delay,
            exc_info=True,
        )
        metrics.callback_attempt(metrics.CallbackOutcome.internal_error)
        if delay is None:
            return {"outcome": "abandoned", "delivery_id": parsed.delivery_id}
        raise Retry(defer=delay) from None


async def _run(
    ctx: dict[str, Any], settings: Settings, redis: Redis, delivery: Delivery, attempt: int
) -> dict[str, Any]:
    fields = {"job_id": delivery.job_id, "delivery_id": delivery.delivery_id, "attempt": attempt}
    state = await _read_state(redis, delivery.job_id)
    if (
        state is not None
        and state.status == CallbackStatus.delivered
        and state.delivery_id == delivery.delivery_id
    ):
        log.info("callback.attempt", **fields, outcome="skipped", reason="already delivered")
        metrics.callback_attempt(metrics.CallbackOutcome.skipped)
        return {"outcome": "skipped", "delivery_id": delivery.delivery_id}

    client = ctx.get("callback_client")
    if client is None:  # startup() was not wired: still deliver, with a client of our own
        await startup(ctx)
        client = ctx["callback_client"]
    outcome = await send_attempt(client, delivery, settings, resolver=ctx.get("callback_resolver"))
    attempts = delivery.prior_attempts + attempt
    fields.update(
        {"target": redact_url(delivery.url)}
        | ({"status_code": outcome.status_code} if outcome.status_code is not None else {})
        | ({"error": outcome.error} if outcome.status_code is None and outcome.error else {})
    )

    if outcome.verdict is Verdict.delivered:
        await _update_state(
            redis,
            delivery.job_id,
            CallbackState(
                status=CallbackStatus.delivered, delivery_id=delivery.delivery_id, attempts=attempts
            ),
        )
        await deadletters.remove(redis, delivery.delivery_id)
        log.info("callback.attempt", **fields, outcome="delivered")
        metrics.callback_attempt(metrics.CallbackOutcome.delivered)
        return {"outcome": "delivered", "delivery_id": delivery.delivery_id, "attempts": attempts}

    if outcome.verdict is Verdict.retry:
        delay = _retry_delay(settings, attempt, outcome.retry_after_s)
        if delay is not None:
            await _update_state(
                redis,
                delivery.job_id,
                CallbackState(
                    status=CallbackStatus.pending,
                    delivery_id=delivery.delivery_id,
                    attempts=attempts,
                    last_error=outcome.error,
                ),
            )
            # The job key must outlive the wait, or arq drops the job unseen.
            ttl_ms = int((delay + MAX_DELAY_S) * 1000)
            await redis.pexpire(wire.job_key(delivery.delivery_id), ttl_ms)
            log.info(
                "callback.attempt", **fields, outcome="retry", next_attempt_in_s=round(delay, 3)
            )
            metrics.callback_attempt(metrics.CallbackOutcome.retry)
            raise Retry(defer=delay)

    reason = _dead_reason(outcome)
    letter = DeadLetter(
        delivery=delivery,
        reason=reason,
        attempts=attempts,
        last_error=outcome.error,
        last_status=outcome.status_code,
        dead_at=time.time(),
    )
    await deadletters.put(redis, letter)
    await _update_state(
        redis,
        delivery.job_id,
        CallbackState(
            status=CallbackStatus.dead_lettered,
            delivery_id=delivery.delivery_id,
            attempts=attempts,
            last_error=outcome.error,
        ),
    )
    log.warning("callback.attempt", **fields, outcome="dead_lettered", reason=reason.value)
    metrics.callback_attempt(metrics.CallbackOutcome.dead_lettered, dead_reason=reason.value)
    return {"outcome": "dead_lettered", "delivery_id": delivery.delivery_id, "reason": reason.value}


def _dead_reason(outcome: AttemptOutcome) -> DeadLetterReason:
    if outcome.refused:
        return DeadLetterReason.refused
    if outcome.verdict is Verdict.gone:
        return DeadLetterReason.gone
    if outcome.verdict is Verdict.final:
        return DeadLetterReason.final_status
    return DeadLetterReason.exhausted


def _retry_delay(settings: Settings, attempt: int, retry_after_s: float | None) -> float | None:
    return retry_delay_s(
        settings.callback_schedule(),
        attempt,
        jitter=settings.callback_jitter,
        retry_after_s=retry_after_s,
        retry_after_max_s=settings.callback_retry_after_max_s,
        rand=random.random,
    )


async def _dead_letter_invalid(
    redis: Redis, ctx: dict[str, Any], raw: Any, attempt: int
) -> dict[str, Any]:
    """A delivery job we cannot read (a foreign producer): kept as a dead letter, not lost."""
    delivery_id = str(ctx.get("job_id") or "unknown")
    source = raw if isinstance(raw, dict) else {}
    delivery = Delivery(
        delivery_id=delivery_id,
        job_id=str(source.get("job_id") or delivery_id),
        url=str(source.get("url") or "invalid:"),
        body=wire.dumps(raw),
        created_at=time.time(),
    )
    error = "the delivery job is malformed (not written by mimoq's schedule_callback)"
    await deadletters.put(
        redis,
        DeadLetter(
            delivery=delivery,
            reason=DeadLetterReason.invalid,
            attempts=0,
            last_error=error,
            dead_at=time.time(),
        ),
    )
    log.warning(
        "callback.attempt",
        job_id=delivery.job_id,
        delivery_id=delivery_id,
        attempt=attempt,
        error=error,
        outcome="dead_lettered",
        reason=DeadLetterReason.invalid.value,
    )
    metrics.callback_attempt(metrics.CallbackOutcome.dead_lettered, dead_reason="invalid")
    return {"outcome": "dead_lettered", "delivery_id": delivery_id, "reason": "invalid"}


# --- one HTTP attempt ---------------------------------------------------------------------


async def send_attempt(
    client: httpx.AsyncClient,
    delivery: Delivery,
    settings: Settings,
    *,
    resolver: Resolver | None = None,
) -> AttemptOutcome:
    """Resolve, check, sign and POST once; every failure becomes an AttemptOutcome.

    The whole attempt (DNS included) runs under ``callback_timeout_s``; at most
    ``callback_max_response_bytes`` of the answer are read before the connection closes.
    """
    body = delivery.body.encode()
    try:
        async with asyncio.timeout(settings.callback_timeout_s):
            target = await resolve_checked(delivery.url, settings, resolver=resolver)
            headers = delivery_headers(
                delivery, timestamp=int(time.time()), body=body, secrets=settings.webhook_secrets()
            )
            headers["host"] = target.host_header
            request = client.build_request(
                "POST",
                target.connect_url,
                content=body,
                headers=headers,
                extensions=target.extensions(),
            )
            response = await client.send(request, stream=True, follow_redirects=False)
            try:
                await _drain(response, settings.callback_max_response_bytes)
            finally:
                await response.aclose()
    except CallbackUrlRefusedError as exc:
        return AttemptOutcome(Verdict.final, error=exc.message, refused=True)
    except CallbackDnsError as exc:
        return AttemptOutcome(Verdict.retry, error=exc.message)
    except TimeoutError:
        timed_out = f"timed out after {settings.callback_timeout_s:g} s"
        return AttemptOutcome(Verdict.retry, error=timed_out)
    except (httpx.HTTPError, OSError) as exc:
        return AttemptOutcome(Verdict.retry, error=_describe(exc, delivery))
    verdict = classify_status(response.status_code)
    retry_after = (
        parse_retry_after(response.headers.get("retry-after"), now=time.time())
        if verdict is Verdict.retry
        else None
    )
    error = None if verdict is Verdict.delivered else f"HTTP {response.status_code}"
    return AttemptOutcome(verdict, response.status_code, error, retry_after)


async def _drain(response: httpx.Response, limit: int) -> None:
    """Read (and drop) at most about ``limit`` bytes, so a huge or endless answer is cut."""
    received = 0
    if limit <= 0 or response.is_stream_consumed:  # (an injected transport's ready-made body)
        return
    async for chunk in response.aiter_raw():
        received += len(chunk)
        if received >= limit:
            return


def _describe(exc: BaseException, delivery: Delivery) -> str:
    """A loggable error text: httpx may quote the URL, whose path and query may hold tokens."""
    text = str(exc)
    if delivery.url in text:
        text = text.replace(delivery.url, redact_url(delivery.url))
    kind = type(exc).__name__
    return f"{kind}: {text}" if text else kind


# --- the result record's callback state ---------------------------------------------------


async def _read_state(redis: Redis, job_id: str) -> CallbackState | None:
    raw = await redis.get(wire.result_key(job_id))
    if raw is None:
        return None
    try:
        record = json.loads(raw)
        return CallbackState.model_validate(record.get("callback") or {})
    except (ValueError, AttributeError):
        return None  # not a record we can read; delivering is still right


async def _update_state(redis: Redis, job_id: str, state: CallbackState) -> bool:
    """Rewrite the record's ``callback`` field under WATCH/MULTI, keeping its TTL.

    Only that field changes: the rest of the record is carried as JSON, untouched. A record
    that is gone (expired) is not recreated: the delivery goes ahead without it.
    """
    key = wire.result_key(job_id)
    for _ in range(_WATCH_TRIES):
        async with redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                raw = await pipe.get(key)
                if raw is None:
                    return False
                record = json.loads(raw)
                if not isinstance(record, dict):
                    return False
                record["callback"] = state.model_dump(mode="json")
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.set(key, wire.dumps(record), keepttl=True)
                await pipe.execute()
                return True
            except WatchError:
                continue
    log.warning("callback.state_not_updated", job_id=job_id, status=state.status.value)
    return False
