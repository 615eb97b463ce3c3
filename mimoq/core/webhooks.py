"""PURE: Standard Webhooks signing, the delivery record, and the callback retry policy.

A callback is a *delivery*: one signed JSON body with a stable ``webhook-id`` (the
receiver's idempotency key), sent by attempts until a 2xx, a final answer, or the end of
the retry schedule. Everything here is a plain function of its inputs (no I/O, no clock,
no randomness of its own), so the worker's shell stays thin and the policy is testable
with tables. Format: https://www.standardwebhooks.com/ (the spec Svix and others follow).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from mimoq.core.http_headers import header_problem

HEADER_ID: Final = "webhook-id"
HEADER_TIMESTAMP: Final = "webhook-timestamp"
HEADER_SIGNATURE: Final = "webhook-signature"
SECRET_PREFIX: Final = "whsec_"  # noqa: S105  (a format prefix, not a secret)
USER_AGENT: Final = "mimoq-webhooks/1"

#: arq keeps a job's try counter (``arq:retry:<id>``) for 88,400 s after each try; a longer
#: wait between two tries would reset it and the schedule would start over, forever.
MAX_DELAY_S: Final = 86_400.0
DEFAULT_SCHEDULE_S: Final = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
_SCHEDULE_FORMAT = "the callback schedule must be comma-separated seconds, e.g. 0,5,300"


class DeliveryVerdict(StrEnum):
    """What one HTTP answer means for the delivery."""

    delivered = "delivered"
    retry = "retry"  # 408, 429, 5xx, network errors, timeouts
    final = "final"  # any other 4xx: the receiver refuses this request for good
    gone = "gone"  # 410: the endpoint no longer exists
    #: 3xx: redirects are never followed (the target could be past the SSRF check), and
    #: asking again will not change the answer: final at once, with its Location kept.
    redirect = "redirect"


class AttemptRecord(BaseModel):
    """One attempt, as kept in the delivery's history (the audit trail ``callbacks show``
    prints): when, how long, and what came back. ``error`` is safe to show (no secrets)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    at: float  # unix seconds, when the attempt started
    duration_s: float
    outcome: str  # delivered | retry | dead_lettered | internal
    status_code: int | None = None
    error: str | None = None
    location: str | None = None  # a 3xx's Location header, as the receiver sent it


#: How many attempts a delivery's history keeps (the oldest are dropped past it).
MAX_HISTORY: Final = 200


class Delivery(BaseModel):
    """One callback delivery, as the worker stores it (``mimoq:delivery:<id>``) and in its
    dead letter. Its arq job carries only the ids: url, headers and body are read from the
    worker-written record, never from the queue (see ``mimoq.core.deliveries``).

    ``body`` is the exact JSON text that is signed and sent: it is built from the result
    record once, when the delivery is scheduled, so every attempt and every replay sends
    identical bytes. A delivery that has ended (delivered, or dead-lettered: the dead letter
    keeps its own copy) keeps its history but not its body (``None``): the result record
    already holds everything in it, and the body is most of a record's size.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    delivery_id: str = Field(min_length=1)
    job_id: str = Field(min_length=1)
    url: str = Field(min_length=1)
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    created_at: float
    #: attempts made by earlier runs (a replay starts a fresh schedule but keeps counting)
    prior_attempts: int = Field(default=0, ge=0)
    replays: int = Field(default=0, ge=0)
    #: every attempt so far, replays included, oldest first (at most MAX_HISTORY)
    history: tuple[AttemptRecord, ...] = ()
    #: W3C trace context of the attempt that finished the job: each POST continues it.
    traceparent: str | None = None

    def with_attempt(self, record: AttemptRecord) -> Delivery:
        """This delivery with one more attempt in its history."""
        return self.model_copy(update={"history": (*self.history, record)[-MAX_HISTORY:]})

    def ended(self) -> Delivery:
        """This delivery as kept once it has ended: the history without the body."""
        return self.model_copy(update={"body": None})


class InvalidDeliveryHeader(ValueError):
    """A stored header that may not be sent; the message names the header, never its value."""


# --- signing ------------------------------------------------------------------------------


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; ValueError (naming no secret) if malformed."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret must look like {SECRET_PREFIX}<base64>")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error:
        raise ValueError(f"the part after {SECRET_PREFIX} is not valid base64") from None
    if not key:
        raise ValueError("a webhook secret may not be empty")
    return key


def signature(secrets: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, one per secret, space separated.

    Several secrets at once let a receiver rotate: it verifies under the old or the new one.
    """
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.digest(decode_secret(s), signed, hashlib.sha256)).decode()
        for s in secrets
    )


def delivery_headers(
    delivery: Delivery, *, timestamp: int, body: bytes, secrets: Sequence[str]
) -> dict[str, str]:
    """Every header of one attempt: the user's, then ours (which the job model forbids users
    to set). No secret configured → no signature header, but id and timestamp still go."""
    # The job model already refuses these names and values; a foreign producer may not have
    # asked it, so they are checked again here (ValueError names the header, not its value).
    for name, value in delivery.headers.items():
        problem = header_problem(name, value)
        if problem is not None:
            raise InvalidDeliveryHeader(problem)
    headers = {
        name: value
        for name, value in delivery.headers.items()
        if not name.lower().startswith("webhook-")
        and name.lower() not in ("content-type", "content-length", "host")
    }
    if not any(name.lower() == "user-agent" for name in headers):
        headers["user-agent"] = USER_AGENT
    headers.update(
        {
            "content-type": "application/json",
            HEADER_ID: delivery.delivery_id,
            HEADER_TIMESTAMP: str(timestamp),
        }
    )
    if secrets:
        headers[HEADER_SIGNATURE] = signature(secrets, delivery.delivery_id, timestamp, body)
    return headers


# --- the answer ---------------------------------------------------------------------------


def classify_status(status: int) -> DeliveryVerdict:
    """2xx delivered; 3xx redirect (final: redirects are not followed); 410 gone;
    408/429/5xx retry; any other 4xx final."""
    if 200 <= status < 300:
        return DeliveryVerdict.delivered
    if 300 <= status < 400:
        return DeliveryVerdict.redirect
    if status == 410:
        return DeliveryVerdict.gone
    if 400 <= status < 500 and status not in (408, 429):
        return DeliveryVerdict.final
    return DeliveryVerdict.retry


# --- the schedule -------------------------------------------------------------------------


def parse_schedule(value: object) -> tuple[float, ...]:
    """A retry schedule from ``"0,5,300"`` or a sequence of numbers; ValueError if unusable.

    Entry *i* is the wait before attempt *i + 1*, so the length is the number of attempts.
    """
    if isinstance(value, str):
        parts: list[object] = [p for p in value.replace(" ", "").split(",") if p]
    elif isinstance(value, list | tuple):
        parts = list(value)
    else:
        raise ValueError(_SCHEDULE_FORMAT)
    try:
        schedule = tuple(float(p) for p in parts)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(_SCHEDULE_FORMAT) from None
    if not schedule:
        raise ValueError("the callback schedule needs at least one entry (the first attempt)")
    for delay in schedule:
        if not math.isfinite(delay) or delay < 0 or delay > MAX_DELAY_S:
            raise ValueError(f"callback schedule entries must be between 0 and {MAX_DELAY_S:g} s")
    return schedule


def retry_delay_s(
    schedule: Sequence[float],
    attempt: int,
    *,
    jitter: float,
    retry_after_s: float | None,
    retry_after_max_s: float,
    rand: Callable[[], float],
) -> float | None:
    """Seconds until attempt ``attempt + 1`` after attempt ``attempt`` (1-based) failed and
    may be retried; None when the schedule is exhausted.

    The scheduled wait gets ±``jitter`` (``rand()`` in [0, 1)) so receivers that failed
    together are not hit again in lockstep. A ``Retry-After`` (capped) can only lengthen
    the wait: taking a short one literally would let a receiver that always answers
    "Retry-After: 1" burn through a day's schedule in seconds.
    """
    if attempt >= len(schedule):
        return None
    delay = schedule[attempt] * (1 + jitter * (2 * rand() - 1))
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, retry_after_max_s))
    return min(delay, MAX_DELAY_S)
