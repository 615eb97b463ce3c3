"""Delivery records: what a callback delivery sends, kept where only workers write.

A delivery's arq job (``deliver_callback``) carries nothing but ``{"delivery_id", "job_id"}``.
The url, headers and signed body live in ``mimoq:delivery:<delivery_id>`` (JSON), written
by the worker that finished the job, from the result record it had just written. So a job
forged straight into the queue (``SET arq:job:…`` + ``ZADD``) cannot choose what gets
signed or where it goes: with no record, or ids that do not match, it is refused. This
holds against any client the Redis ACLs keep away from ``mimoq:delivery:*`` and
``mimoq:result:*`` (``mimoq acl`` prints such users).

The record also keeps every attempt (``history``), which ``mimoq callbacks show`` prints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from mimoq.core import arq_compat, scripts, wire
from mimoq.core.webhooks import MAX_DELAY_S, Delivery


class DeliveryRef(BaseModel):
    """The whole of a delivery job's argument: which delivery, of which job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    delivery_id: str = Field(min_length=1, max_length=200)
    job_id: str = Field(min_length=1, max_length=200)


class RefusedDelivery(Exception):
    """A delivery job that did not come from mimoq (forged or malformed): nothing is sent."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def key(delivery_id: str) -> str:
    return wire.DELIVERY_PREFIX + delivery_id


async def enqueue(redis: Redis, delivery: Delivery, *, defer_s: float) -> bool:
    """Store the record and enqueue its job; False (nothing written) if one is pending."""
    keys, args = _enqueue_call(delivery, defer_s=defer_s)
    return bool(await scripts.named("delivery_enqueue").run(redis, keys, args))


@dataclass
class HandOver:
    """A delivery's ``enqueue``, made by the script that writes its job's result record
    (``result_hand_over.lua``): its keys and arguments after the record's, and what the
    script answered (``queued``: the record and the job written)."""

    delivery: Delivery
    keys: list[str]
    args: list[str]
    queued: bool = False


def hand_over(delivery: Delivery, *, defer_s: float) -> HandOver:
    keys, args = _enqueue_call(delivery, defer_s=defer_s)
    return HandOver(delivery, keys, args)


def _enqueue_call(delivery: Delivery, *, defer_s: float) -> tuple[list[str], list[str]]:
    # arq drops a job whose key expired; each retry extends it (and the record) again.
    ttl_s = defer_s + MAX_DELAY_S
    ref = DeliveryRef(delivery_id=delivery.delivery_id, job_id=delivery.job_id)
    keys = [wire.job_key(delivery.delivery_id), wire.QUEUE_NAME, key(delivery.delivery_id)]
    args = [
        delivery.delivery_id,
        wire.dumps(  # what arq's job serializer (wire.serialize) writes, as text
            arq_compat.envelope(
                wire.TASK_CALLBACK,
                {"delivery": ref.model_dump(mode="json")},
                enqueued_ms=int(time.time() * 1000),
            )
        ),
        _record(delivery),
        str(int(defer_s * 1000)),
        str(max(1, int(ttl_s * 1000))),
    ]
    # Atomic (delivery_enqueue.lua): the record and the arq job are written together, and
    # only when no delivery job with this id is queued or running (a replay must not race a
    # live one; a duplicate schedule must not reset a history). The arq job (its envelope) is
    # built in Python by arq_compat; the run-at time is Redis's clock, like every other score
    # in the queue.
    return keys, args


async def hurry(redis: Redis, delivery_id: str) -> None:
    """Make a queued delivery job due now, if it is due later (never later than it was)."""
    await redis.zadd(wire.QUEUE_NAME, {delivery_id: int(time.time() * 1000)}, xx=True, lt=True)


async def load(redis: Redis, delivery_id: str) -> Delivery | None:
    """The stored record, or None when there is none (or it is not one of ours)."""
    raw = await redis.get(key(delivery_id))
    if raw is None:
        return None
    try:
        return Delivery.model_validate_json(raw)
    except ValidationError:
        return None


async def save(redis: Redis, delivery: Delivery, *, ttl_s: float) -> None:
    """Rewrite the record (a new attempt in its history) with a fresh TTL."""
    await redis.set(key(delivery.delivery_id), _record(delivery), px=_ttl_ms(ttl_s))


def queue_save(pipe: Pipeline, delivery: Delivery, *, ttl_s: float) -> None:
    """``save`` queued on ``pipe``, to go with the caller's other writes."""
    pipe.set(key(delivery.delivery_id), _record(delivery), px=_ttl_ms(ttl_s))


def _ttl_ms(ttl_s: float) -> int:
    return max(1, int(ttl_s * 1000))


def _record(delivery: Delivery) -> str:
    # Defaults (no headers, no replays, an attempt's absent error...) are left out: one of
    # these records stays for every callback of the last MIMOQ_RESULT_TTL_S.
    return wire.dumps(delivery.model_dump(mode="json", exclude_defaults=True))


async def resolve(redis: Redis, raw: object, arq_job_id: str | None) -> Delivery:
    """The stored delivery a job's argument points to; RefusedDelivery if it points to none.

    The ids must agree three ways (argument, arq job id, ``cb-<job_id>``) and the record
    must exist: a forged job can at most re-trigger a real delivery, to its own receiver,
    with its own body, which the record's state then skips if it was already delivered.
    """
    if isinstance(raw, dict) and ({"url", "body", "headers"} & raw.keys()):
        raise RefusedDelivery(
            "the delivery job carries its own url/headers/body: only the worker's stored "
            "delivery record is trusted"
        )
    try:
        ref = DeliveryRef.model_validate(raw)
    except ValidationError:
        raise RefusedDelivery("the delivery job is malformed (not written by mimoq)") from None
    if ref.delivery_id != wire.callback_job_id(ref.job_id) or ref.delivery_id != arq_job_id:
        raise RefusedDelivery("the delivery job's ids do not match each other")
    delivery = await load(redis, ref.delivery_id)
    if delivery is None or delivery.job_id != ref.job_id:
        raise RefusedDelivery("no delivery record for this id: it was not scheduled by a worker")
    return delivery
