"""A callback's delivery record and its arq job are written together, once: a second
enqueue while one is pending writes nothing (delivery_put.lua), on every backend."""

from __future__ import annotations

import time

from arq.connections import ArqRedis

from mimoq.core import deliveries, wire
from mimoq.core.webhooks import Delivery


def delivery(body: str) -> Delivery:
    return Delivery(
        delivery_id="cb-1", job_id="1", url="https://x.example/", body=body, created_at=time.time()
    )


async def test_a_pending_delivery_is_not_written_again(backend: ArqRedis) -> None:
    assert await deliveries.enqueue(backend, delivery('{"n":1}'), defer_s=60)
    record = await backend.get(deliveries.key("cb-1"))
    job = await backend.get(wire.job_key("cb-1"))
    score = await backend.zscore(wire.QUEUE_NAME, "cb-1")
    assert record is not None and job is not None and score is not None
    # the same delivery again, due at once: nothing moves
    assert not await deliveries.enqueue(backend, delivery('{"n":2}'), defer_s=0)
    assert await backend.get(deliveries.key("cb-1")) == record
    assert await backend.get(wire.job_key("cb-1")) == job
    assert await backend.zscore(wire.QUEUE_NAME, "cb-1") == score
    # once its job is gone (delivered, or expired), a new one is written
    await backend.delete(wire.job_key("cb-1"))
    assert await deliveries.enqueue(backend, delivery('{"n":3}'), defer_s=0)
    stored = await backend.get(deliveries.key("cb-1"))
    assert stored is not None and b'{\\"n\\":3}' in stored
