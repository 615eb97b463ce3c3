"""The callback delivery job: signed, retried on its own schedule, dead-lettered, never lost.

A finished job hands its callback to :func:`schedule_callback` (``mimoq.core.finish``,
re-exported here), which builds the body from
the result record once, stores the delivery where only workers write
(``mimoq.core.deliveries``) and enqueues a ``deliver_callback`` arq job that carries only
the ids. Each run of that job is one attempt: read the stored delivery (a job with none is
refused: forged), resolve and check the URL (``mimoq.core.ssrf``), POST the signed body to
the checked address, then deliver / retry (``arq.Retry``) / dead-letter, keeping the
result record's ``callback`` state and the delivery's attempt history current. httpx and
DNS errors are translated here, in one place; no other exception leaves the task.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from redis.asyncio import Redis
from redis.exceptions import RedisError

from mimoq.core import arq_compat, deadletters, deliveries, scripts, tracing, wire
from mimoq.core.deadletters import DeadLetter, DeadLetterReason
from mimoq.core.deliveries import RefusedDelivery
from mimoq.core.finish import enqueue_delivery, inline_bound_s
from mimoq.core.finish import schedule_callback as schedule_callback  # re-exported
from mimoq.core.http_headers import encode_value, parse_retry_after
from mimoq.core.jobs import CallbackState, CallbackStatus
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
    AttemptRecord,
    Delivery,
    DeliveryVerdict,
    InvalidDeliveryHeader,
    classify_status,
    delivery_headers,
    retry_delay_s,
)
from mimoq.worker import metrics

log = structlog.get_logger("mimoq.callbacks")

#: Runs allowed beyond the schedule when Redis failed (not the receiver).
_EXTRA_TRIES: Final = 3
_INTERNAL_RETRY_S: Final = 60.0
#: Reads of a result record whose callback field could not be set (it changed meanwhile).
_SWAP_TRIES: Final = 10
_MAX_LOCATION_CHARS: Final = 2048


class ReplayOutcome(StrEnum):
    enqueued = "enqueued"
    already_pending = "already_pending"  # a delivery job with this id is queued or running
    not_found = "not_found"


@dataclass(frozen=True)
class AttemptOutcome:
    """What one attempt came to; ``error`` is safe to log and to show the user."""

    verdict: DeliveryVerdict
    status_code: int | None = None
    error: str | None = None
    retry_after_s: float | None = None
    refused: bool = False
    location: str | None = None  # a 3xx's Location header


async def replay_dead_letter(redis: Redis, delivery_id: str) -> ReplayOutcome:
    """Send a dead-lettered delivery again: same id and body, a fresh schedule of attempts.

    The dead letter stays until the replay is delivered; the attempt history carries on
    (the delivery record keeps it after that, for ``mimoq callbacks show``).
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


async def open_callback_client(ctx: dict[str, Any]) -> None:
    """Create the callback HTTP client (unless one was injected, e.g. by a test)."""
    if "callback_client" not in ctx:
        ctx["callback_client"] = build_client(ctx["settings"])
        ctx["callback_client_owned"] = True


async def close_callback_client(ctx: dict[str, Any]) -> None:
    """Close the client ``open_callback_client`` created (an injected one is its owner's)."""
    if ctx.pop("callback_client_owned", False):
        await ctx.pop("callback_client").aclose()


def build_client(settings: Settings, *, verify: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
    """An HTTP client fit for untrusted receivers (``verify``: e.g. a test CA's context)."""
    return httpx.AsyncClient(
        verify=verify,
        timeout=httpx.Timeout(settings.callbacks.timeout_s),
        follow_redirects=False,  # a redirect could lead past the SSRF check
        trust_env=False,  # an environment proxy would connect for us, unchecked
        # No connection reuse: requests are pinned to an IP with the name in SNI, and a
        # pooled TLS connection verified for one name must not carry another name's request.
        limits=httpx.Limits(max_keepalive_connections=0),
    )


async def deliver_callback(ctx: dict[str, Any], delivery: Any) -> dict[str, Any] | None:
    """arq task ``deliver_callback``: one attempt at delivering one callback.

    ``delivery`` is ``{"delivery_id", "job_id"}``; everything sent comes from the stored
    record. Redis trouble is retried; any other failure of ours is dead-lettered with
    reason ``internal`` (retrying a bug only hides it), never left to arq.
    """
    settings: Settings = ctx["settings"]
    redis: Redis = ctx["redis"]
    attempt = int(ctx.get("job_try") or 1)
    arq_id = str(ctx.get("job_id") or "")
    stored: Delivery | None = None
    try:
        stored = await deliveries.resolve(redis, delivery, arq_id)
        ended = await _run(ctx, settings, redis, stored, attempt)
        if isinstance(ended, RetryIn):
            raise Retry(defer=ended.delay_s)
        return ended
    except RefusedDelivery as exc:
        log.warning("callback.refused", delivery_id=arq_id, attempt=attempt, reason=exc.reason)
        metrics.callback_attempt(metrics.CallbackOutcome.refused)
        return {"outcome": "refused", "delivery_id": arq_id, "reason": exc.reason}
    except Retry:
        raise
    except RedisError as exc:  # Redis trouble: retry, never fail silently in arq
        delay = _retry_delay(settings, attempt, None)
        if delay is None and attempt < len(settings.callbacks.schedule_s) + _EXTRA_TRIES:
            delay = _INTERNAL_RETRY_S
        log.error(
            "callback.internal_error",
            delivery_id=arq_id,
            attempt=attempt,
            error=type(exc).__name__,
            next_attempt_in_s=delay,
        )
        metrics.callback_attempt(metrics.CallbackOutcome.internal_error)
        if delay is not None:
            raise Retry(defer=delay) from None
        error = f"Redis failed on every try ({type(exc).__name__})"
        return await _dead_letter_internal(redis, settings, stored, attempt, error)
    except Exception as exc:  # our bug: dead-letter it, with the record updated
        log.error(
            "callback.internal_error",
            delivery_id=arq_id,
            attempt=attempt,
            error=type(exc).__name__,
            exc_info=True,
        )
        metrics.callback_attempt(metrics.CallbackOutcome.internal_error)
        error = (
            str(exc)  # written by us to name the header, never its value
            if isinstance(exc, InvalidDeliveryHeader)
            else f"internal error in mimoq ({type(exc).__name__}); see the worker's log"
        )
        return await _dead_letter_internal(redis, settings, stored, attempt, error)


@dataclass(frozen=True)
class RetryIn:
    """An attempt that failed and is retried this many seconds from now (recorded as such)."""

    delay_s: float


async def _run(
    ctx: dict[str, Any],
    settings: Settings,
    redis: Redis,
    delivery: Delivery,
    attempt: int,
    *,
    fresh: bool = False,
    record: str | None = None,
) -> dict[str, Any] | RetryIn:
    """One attempt, recorded: its summary, or when to retry it. ``fresh``: the delivery was
    scheduled just now by this caller (nothing delivered or ended it yet: no read needed),
    whose backstop job goes with a delivered attempt's record (``_mark_delivered``);
    ``record``: the result record's text as that caller wrote it."""
    fields = {"job_id": delivery.job_id, "delivery_id": delivery.delivery_id, "attempt": attempt}
    skip = None if fresh else await _skip_reason(redis, delivery)
    if skip is not None:
        log.info("callback.attempt", **fields, outcome="skipped", reason=skip)
        metrics.callback_attempt(metrics.CallbackOutcome.skipped)
        return {"outcome": "skipped", "delivery_id": delivery.delivery_id}

    client = ctx.get("callback_client")
    if client is None:  # not opened at startup: still deliver, with a client of our own
        await open_callback_client(ctx)
        client = ctx["callback_client"]
    started_at, started = time.time(), time.monotonic()
    outcome = await _traced_attempt(ctx, client, delivery, settings, attempt)
    duration_s = round(time.monotonic() - started, 4)
    attempts = delivery.prior_attempts + attempt
    fields.update(
        {"target": redact_url(delivery.url), "duration_s": duration_s}
        | ({"status_code": outcome.status_code} if outcome.status_code is not None else {})
        | ({"error": outcome.error} if outcome.status_code is None and outcome.error else {})
    )

    def recorded(result: str) -> Delivery:
        return delivery.with_attempt(
            AttemptRecord(
                at=started_at,
                duration_s=duration_s,
                outcome=result,
                status_code=outcome.status_code,
                error=outcome.error,
                location=outcome.location,
            )
        )

    if outcome.verdict is DeliveryVerdict.delivered:
        # Ended: the record keeps the history, not the body (the result record holds it all).
        ended = recorded("delivered").ended()
        await _mark_delivered(redis, settings, ended, attempts, record, backstop=fresh)
        log.info("callback.attempt", **fields, outcome="delivered")
        metrics.callback_attempt(metrics.CallbackOutcome.delivered)
        return {"outcome": "delivered", "delivery_id": delivery.delivery_id, "attempts": attempts}

    if outcome.verdict is DeliveryVerdict.retry:
        delay = _retry_delay(settings, attempt, outcome.retry_after_s)
        if delay is not None:
            await _record_retry(redis, recorded("retry"), attempts, outcome.error, delay)
            log.info(
                "callback.attempt", **fields, outcome="retry", next_attempt_in_s=round(delay, 3)
            )
            metrics.callback_attempt(metrics.CallbackOutcome.retry)
            return RetryIn(delay)

    reason = _dead_reason(outcome)
    await _dead_letter(
        redis,
        settings,
        recorded("dead_lettered"),
        reason=reason,
        attempts=attempts,
        error=outcome.error,
        status=outcome.status_code,
        location=outcome.location,
    )
    log.warning("callback.attempt", **fields, outcome="dead_lettered", reason=reason.value)
    metrics.callback_attempt(metrics.CallbackOutcome.dead_lettered, dead_reason=reason.value)
    return {"outcome": "dead_lettered", "delivery_id": delivery.delivery_id, "reason": reason.value}


async def _record_retry(
    redis: Redis, retried: Delivery, attempts: int, error: str | None, delay_s: float
) -> None:
    ttl_s = _retry_ttl_s(delay_s)
    await deliveries.save(redis, retried, ttl_s=ttl_s)
    state = CallbackState(
        status=CallbackStatus.pending,
        delivery_id=retried.delivery_id,
        attempts=attempts,
        last_error=error,
    )
    await _update_state(redis, retried.job_id, state)
    await redis.pexpire(wire.job_key(retried.delivery_id), int(ttl_s * 1000))


def _retry_ttl_s(delay_s: float) -> float:
    """How long a retried delivery's job key, record and try count live: past the wait, or
    arq drops the job unseen."""
    return delay_s + MAX_DELAY_S


async def _skip_reason(redis: Redis, delivery: Delivery) -> str | None:
    """Why this attempt sends nothing, or None to send it."""
    state = await _read_state(redis, delivery.job_id)
    if (
        state is not None
        and state.status == CallbackStatus.delivered
        and state.delivery_id == delivery.delivery_id
    ):
        return "already delivered"
    if delivery.body is None:
        # An ended delivery's job run again (a worker died before arq marked it done, or a
        # forged job): nothing is sent twice; a dead letter is sent again only by a replay.
        return "already ended"
    return None


async def _mark_delivered(
    redis: Redis,
    settings: Settings,
    ended: Delivery,
    attempts: int,
    record: str | None,
    *,
    backstop: bool = False,
) -> None:
    """Record a delivered attempt: the delivery record, the result record's callback state
    and, with ``backstop`` (the inline attempt's), the backstop job's removal, in one round
    trip when the result record's text is known. They were three: the record, the state's
    swap, the backstop's ZREM and DEL (2 round trips more for every callback delivered in
    its job's run, issue #22). A swap that finds the record changed reads it again."""
    state = CallbackState(
        status=CallbackStatus.delivered, delivery_id=ended.delivery_id, attempts=attempts
    )
    key = wire.result_key(ended.job_id)
    swap = scripts.named("result_callback_swap")
    swap_args = None if record is None else _swap_args(record, state)
    async with redis.pipeline(transaction=False) as pipe:
        deliveries.queue_save(pipe, ended, ttl_s=settings.storage.result_ttl_s)
        if backstop:
            pipe.zrem(wire.QUEUE_NAME, ended.delivery_id)
            pipe.delete(wire.job_key(ended.delivery_id))
        if swap_args is not None:
            swap.queue(pipe, [key], swap_args)
        replies = await pipe.execute(raise_on_error=False)
    swap_reply = replies.pop() if swap_args is not None else None
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    if swap_args is None or await swap.settle(redis, swap_reply, [key], swap_args) != 1:
        await _update_state(redis, ended.job_id, state)
    # Only a replay can have a dead letter to drop (a dead-lettered delivery has ended: its
    # job run again is skipped, and only ``replay`` sends it again, counting ``replays``):
    # a first delivery spares the two commands and the round trip.
    if ended.replays:
        await deadletters.remove(redis, ended.delivery_id)


async def _traced_attempt(
    ctx: dict[str, Any],
    client: httpx.AsyncClient,
    delivery: Delivery,
    settings: Settings,
    attempt: int,
) -> AttemptOutcome:
    """``send_attempt`` under its CLIENT span (a no-op unless tracing is on): docs/production.md,
    "Tracing"."""
    with tracing.callback_span(
        delivery.traceparent, url=redact_url(delivery.url), delivery_id=delivery.delivery_id,
        job_id=delivery.job_id, attempt=attempt,
    ) as span:  # fmt: skip
        outcome = await send_attempt(
            client, delivery, settings, resolver=ctx.get("callback_resolver")
        )
        if outcome.status_code is not None:
            span.answered(outcome.status_code)
        elif outcome.verdict is not DeliveryVerdict.delivered:
            span.failed("refused" if outcome.refused else "no_answer")
    return outcome


async def _dead_letter(
    redis: Redis,
    settings: Settings,
    delivery: Delivery,
    *,
    reason: DeadLetterReason,
    attempts: int,
    error: str | None,
    status: int | None = None,
    location: str | None = None,
) -> None:
    """Keep the delivery (with its history) as a dead letter and say so in both records."""
    letter = DeadLetter(
        delivery=delivery,
        reason=reason,
        attempts=attempts,
        last_error=error,
        last_status=status,
        last_location=location,
        dead_at=time.time(),
    )
    await deadletters.put(redis, letter, ttl_s=settings.callbacks.dead_letter_ttl_s)
    # The dead letter keeps the body (a replay sends it, even once the result expired).
    await deliveries.save(redis, delivery.ended(), ttl_s=settings.storage.result_ttl_s)
    await _update_state(
        redis,
        delivery.job_id,
        CallbackState(
            status=CallbackStatus.dead_lettered,
            delivery_id=delivery.delivery_id,
            attempts=attempts,
            last_error=error,
        ),
    )


async def _dead_letter_internal(
    redis: Redis, settings: Settings, delivery: Delivery | None, attempt: int, error: str
) -> dict[str, Any]:
    """A delivery mimoq itself could not attempt: dead letter ``internal``, replayable."""
    if delivery is None:  # failed before the record was read: nothing to keep but the log
        log.error("callback.abandoned", attempt=attempt, error=error)
        return {"outcome": "abandoned"}
    recorded = delivery.with_attempt(
        AttemptRecord(at=time.time(), duration_s=0.0, outcome="internal", error=error)
    )
    try:
        await _dead_letter(
            redis,
            settings,
            recorded,
            reason=DeadLetterReason.internal,
            attempts=delivery.prior_attempts + attempt,
            error=error,
        )
    except RedisError as exc:  # nowhere left to write: the log line is the record
        log.error(
            "callback.abandoned",
            delivery_id=delivery.delivery_id,
            attempt=attempt,
            error=error,
            redis_error=type(exc).__name__,
        )
        return {"outcome": "abandoned", "delivery_id": delivery.delivery_id}
    log.warning(
        "callback.attempt",
        job_id=delivery.job_id,
        delivery_id=delivery.delivery_id,
        attempt=attempt,
        outcome="dead_lettered",
        reason=DeadLetterReason.internal.value,
        error=error,
    )
    metrics.callback_attempt(metrics.CallbackOutcome.dead_lettered, dead_reason="internal")
    return {"outcome": "dead_lettered", "delivery_id": delivery.delivery_id, "reason": "internal"}


def _dead_reason(outcome: AttemptOutcome) -> DeadLetterReason:
    if outcome.refused:
        return DeadLetterReason.refused
    if outcome.verdict is DeliveryVerdict.gone:
        return DeadLetterReason.gone
    if outcome.verdict is DeliveryVerdict.redirect:
        return DeadLetterReason.redirect
    if outcome.verdict is DeliveryVerdict.final:
        return DeadLetterReason.final_status
    return DeadLetterReason.exhausted


def _retry_delay(settings: Settings, attempt: int, retry_after_s: float | None) -> float | None:
    return retry_delay_s(
        settings.callbacks.schedule_s,
        attempt,
        jitter=settings.callbacks.jitter,
        retry_after_s=retry_after_s,
        retry_after_max_s=settings.callbacks.retry_after_max_s,
        rand=random.random,
    )


# --- the first attempt, made by the worker that finished the job ---------------------------


async def deliver_inline(
    ctx: dict[str, Any], delivery: Delivery, *, record: str | None = None
) -> None:
    """Attempt a just-finished job's callback in its run (docs/payloads.md, "Who makes the
    first attempt").

    The delivery job is already queued as a backstop (``finish.inline_backstop_s`` out), so
    nothing here can lose the callback: whatever goes wrong of ours (Redis, a bug, a
    shutdown) leaves it to that job, which then makes the first attempt as usual. Once this
    attempt is recorded, the backstop job goes (delivered, dead-lettered) or is moved to the
    retry's time as the delivery's second try. Through arq's queue, the same attempt cost a
    pick of its own, arq's bookkeeping of it and a poll's delay (issue #22). ``record``: the
    result record's text as the finish wrote it (its callback state is updated from it).
    """
    settings: Settings = ctx["settings"]
    redis: Redis = ctx["redis"]
    try:
        async with asyncio.timeout(inline_bound_s(settings.callbacks.timeout_s)):
            ended = await _run(ctx, settings, redis, delivery, 1, fresh=True, record=record)
            if not (isinstance(ended, dict) and ended.get("outcome") == "delivered"):
                await _settle_backstop(redis, delivery, ended)  # (a delivered one's went)
    except Exception as exc:
        log.warning(
            "callback.inline_left_to_job",
            job_id=delivery.job_id,
            delivery_id=delivery.delivery_id,
            error=type(exc).__name__,
        )


async def _settle_backstop(
    redis: Redis, delivery: Delivery, ended: dict[str, Any] | RetryIn
) -> None:
    """Drop the backstop job of an ended delivery, or make it the retry (its try 2)."""
    job_key = wire.job_key(delivery.delivery_id)
    # (no transaction: the backstop job is not due before both writes are in)
    async with redis.pipeline(transaction=False) as pipe:
        if isinstance(ended, RetryIn):
            # (the job key and the record were given the same TTL by _record_retry)
            ttl_ms = int(_retry_ttl_s(ended.delay_s) * 1000)
            arq_compat.count_tries(pipe, delivery.delivery_id, tries=1, ttl_ms=ttl_ms)
            at_ms = int((time.time() + ended.delay_s) * 1000)
            pipe.zadd(wire.QUEUE_NAME, {delivery.delivery_id: at_ms}, xx=True)
        else:
            pipe.zrem(wire.QUEUE_NAME, delivery.delivery_id)
            pipe.delete(job_key)
        await pipe.execute()


# --- one HTTP attempt ---------------------------------------------------------------------


async def send_attempt(
    client: httpx.AsyncClient,
    delivery: Delivery,
    settings: Settings,
    *,
    resolver: Resolver | None = None,
) -> AttemptOutcome:
    """Resolve, check, sign and POST once; every failure of the receiver becomes an
    AttemptOutcome (an invalid stored header raises InvalidDeliveryHeader: ours, not theirs).

    Up to the status line and headers (DNS included) runs under ``callbacks.timeout_s``; the
    verdict is made then. Draining at most ``callbacks.max_response_bytes`` of the body runs
    under a separate bound of the same length and never changes the verdict: a 2xx whose
    body then stalls is delivered, not retried into a duplicate.
    """
    if delivery.body is None:  # _run skips ended deliveries: this would be a bug of ours
        raise ValueError(f"delivery {delivery.delivery_id} has ended: it has no body to send")
    body = delivery.body.encode()
    try:
        async with asyncio.timeout(settings.callbacks.timeout_s):
            target = await resolve_checked(delivery.url, settings, resolver=resolver)
            headers = delivery_headers(
                delivery, timestamp=int(time.time()), body=body, secrets=settings.webhook_secrets()
            )
            headers["host"] = target.host_header
            tracing.add_traceparent(headers, delivery.traceparent)  # the receiver's trace goes on
            request = client.build_request(
                "POST",
                target.connect_url,
                content=body,
                # latin-1 bytes: httpx would encode str values as ASCII and raise on "Zoë".
                headers={
                    name.encode("ascii"): encode_value(value) for name, value in headers.items()
                },
                extensions=target.extensions(),
            )
            response = await client.send(request, stream=True, follow_redirects=False)
    except CallbackUrlRefusedError as exc:
        return AttemptOutcome(DeliveryVerdict.final, error=exc.message, refused=True)
    except CallbackDnsError as exc:
        return AttemptOutcome(DeliveryVerdict.retry, error=exc.message)
    except TimeoutError:
        timed_out = f"timed out after {settings.callbacks.timeout_s:g} s"
        return AttemptOutcome(DeliveryVerdict.retry, error=timed_out)
    except (httpx.HTTPError, OSError) as exc:
        return AttemptOutcome(DeliveryVerdict.retry, error=_describe(exc, delivery))
    try:
        return _judge(response)
    finally:
        await _drain_and_close(response, settings)


def _judge(response: httpx.Response) -> AttemptOutcome:
    verdict = classify_status(response.status_code)
    status = response.status_code
    if verdict is DeliveryVerdict.delivered:
        return AttemptOutcome(verdict, status)
    if verdict is DeliveryVerdict.redirect:
        location = (response.headers.get("location") or "")[:_MAX_LOCATION_CHARS] or None
        where = f" to {redact_url(location)}" if location else " (no Location header)"
        return AttemptOutcome(verdict, status, f"HTTP {status} redirect{where}", location=location)
    retry_after = (
        parse_retry_after(response.headers.get("retry-after"), now=time.time())
        if verdict is DeliveryVerdict.retry
        else None
    )
    return AttemptOutcome(verdict, status, f"HTTP {status}", retry_after)


async def _drain_and_close(response: httpx.Response, settings: Settings) -> None:
    """Read what is cheap to read of the answer, then close; a stalled or broken body is
    simply cut (the verdict is already made)."""
    with contextlib.suppress(TimeoutError, httpx.HTTPError, OSError):
        async with asyncio.timeout(settings.callbacks.timeout_s):
            await _drain(response, settings.callbacks.max_response_bytes)
    with contextlib.suppress(httpx.HTTPError, OSError):
        await response.aclose()


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


async def _update_state(
    redis: Redis, job_id: str, state: CallbackState, *, record: str | bytes | None = None
) -> bool:
    """Rewrite the record's ``callback`` field, keeping its TTL: set only if the record is
    still the text the new one was made from (``result_callback_swap.lua``), else read again.

    Only that field changes: the rest of the record is carried as JSON, untouched. A record
    that is gone (expired) is not recreated: the delivery goes ahead without it. ``record``:
    its text as the caller knows it (the finish that wrote it), which spares the first read.
    """
    key = wire.result_key(job_id)
    swap = scripts.named("result_callback_swap")
    raw = record
    for _ in range(_SWAP_TRIES):
        if raw is None:
            raw = await redis.get(key)
            if raw is None:
                return False
        args = _swap_args(raw, state)
        if args is None:
            return False
        if await swap.run(redis, [key], args) == 1:
            return True
        raw = None  # changed since (or never the text the caller knew): read it again
    log.warning("callback.state_not_updated", job_id=job_id, status=state.status.value)
    return False


def _swap_args(raw: str | bytes, state: CallbackState) -> list[str | bytes] | None:
    """``result_callback_swap.lua``'s arguments: the result record's text ``raw`` and the
    same record with its ``callback`` field set to ``state`` (the rest carried as JSON,
    untouched); None for a text that is not a record."""
    parsed = json.loads(raw)
    if not isinstance(parsed, dict):
        return None
    parsed["callback"] = state.model_dump(mode="json")
    return [raw, wire.dumps(parsed)]
