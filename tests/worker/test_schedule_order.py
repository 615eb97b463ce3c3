"""The limiter's schedule as its scripts read it (limiter_common.lua ``all_tickets``): both
lanes merged in slot order, each ticket with its lane, against a real ``redis-server``."""

from __future__ import annotations

import pytest
from arq.connections import ArqRedis

from mimoq.core import scripts, wire
from mimoq.core.dialect_constants import TTS_MODEL
from mimoq.worker.limiter import RedisLimiter
from mimoq.worker.limiter.config import KEY_PARTS, LimiterConfig, admission_keys, limiter_keys
from tests.support.limiter_tickets import schedule

pytestmark = pytest.mark.redis

#: The prelude's schedule read, returned as (jobs, slot times as text, lanes).
READ = scripts.LuaScript(
    scripts.source("limiter_common")
    + """
bind(KEYS, ARGV)
local ids, times, bulk = all_tickets()
local at, lane = {}, {}
for i = 1, #ids do
  at[i] = fmt(times[i])
  lane[i] = bulk[i] and 'bulk' or 'interactive'
end
return {ids, at, lane}
"""
)


async def read_schedule(redis: ArqRedis) -> list[tuple[str, float, str]]:
    limiter = RedisLimiter(LimiterConfig(account="a", window_s=1.0), redis)
    keys = limiter_keys("a", TTS_MODEL) + admission_keys(TTS_MODEL)
    ids, at, lanes = await READ.run(redis, keys, [wire.dumps(limiter._config(TTS_MODEL))])
    return [
        (i.decode(), float(t), lane.decode()) for i, t, lane in zip(ids, at, lanes, strict=True)
    ]


async def test_both_lanes_merge_in_slot_order_with_each_ticket_in_its_lane(
    redis: ArqRedis,
) -> None:
    keys = dict(zip(KEY_PARTS, limiter_keys("a", TTS_MODEL), strict=True))
    # interleaved lanes, and ties at one time across the lanes and within one
    bulk = {"b-1": 10.0, "b-3": 12.0, "a-tie": 13.0, "z-tie": 13.0, "b-9": 20.0}
    inter = {"i-0": 9.5, "i-2": 11.0, "m-tie": 13.0, "i-4": 14.0}
    await redis.zadd(keys["bulk_tickets"], bulk)
    await redis.zadd(keys["interactive_tickets"], inter)

    read = await read_schedule(redis)

    # the order one sorted set of them all gives (by time, then job id)
    assert [(job, at) for job, at, _ in read] == [
        (job.decode(), at) for job, at in await schedule(redis, "a", TTS_MODEL)
    ]
    assert [job for job, _, _ in read] == [
        "i-0", "b-1", "i-2", "b-3", "a-tie", "m-tie", "z-tie", "i-4", "b-9",
    ]  # fmt: skip
    assert {job: lane for job, _, lane in read} == {
        **{job: "bulk" for job in bulk},
        **{job: "interactive" for job in inter},
    }


@pytest.mark.parametrize("empty", ["bulk_tickets", "interactive_tickets"])
async def test_one_lane_alone_reads_whole(redis: ArqRedis, empty: str) -> None:
    keys = dict(zip(KEY_PARTS, limiter_keys("a", TTS_MODEL), strict=True))
    full = "interactive_tickets" if empty == "bulk_tickets" else "bulk_tickets"
    await redis.zadd(keys[full], {"j-2": 2.0, "j-1": 1.0, "j-3": 3.0})
    lane = full.removesuffix("_tickets")

    assert await read_schedule(redis) == [
        ("j-1", 1.0, lane),
        ("j-2", 2.0, lane),
        ("j-3", 3.0, lane),
    ]


async def test_no_ticket_reads_empty(redis: ArqRedis) -> None:
    assert await read_schedule(redis) == []
