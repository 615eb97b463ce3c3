"""A limiter's schedule as tests read it: the reserved slots of both lanes (a ticket is in
its job's lane only; core/scripts/limiter_common.lua ``all_tickets``)."""

from __future__ import annotations

from arq.connections import ArqRedis

from mimoq.worker.limiter.config import KEY_PARTS, limiter_keys


def _lanes(account: str, model: str) -> list[str]:
    keys = dict(zip(KEY_PARTS, limiter_keys(account, model), strict=True))
    return [keys["bulk_tickets"], keys["interactive_tickets"]]


async def schedule(redis: ArqRedis, account: str, model: str) -> list[tuple[bytes, float]]:
    """Every ticket of ``account``'s ``model`` limiter, in slot order: (job id, slot time)."""
    return await redis.zunion(_lanes(account, model), withscores=True)  # type: ignore[no-any-return]


async def slot_of(redis: ArqRedis, account: str, model: str, job_id: str) -> float | None:
    """The slot time of ``job_id``'s ticket, or None when it holds none."""
    for lane in _lanes(account, model):
        at = await redis.zscore(lane, job_id)
        if at is not None:
            return float(at)
    return None
