"""Admission's round robin over a lane's ring of tenants, taken a turn at a time
(limiter_common.lua ``take_in_turns``: RPOPLPUSH, LPOP, LLEN a job) and in one pass
(``take_in_pass``: the ring and its lists' lengths read once, the turns played out in Lua):
the same jobs, in the same order, from the same tenants, and the ring left the same, for
rings as they come (tenants with empty lists, tenants held at their limit, a tenant listed
twice), against a real ``redis-server``."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from arq.connections import ArqRedis

from mimoq.core import scripts, wire
from mimoq.core.dialect_constants import TTS_MODEL
from mimoq.worker.limiter import RedisLimiter
from mimoq.worker.limiter.config import LimiterConfig, admission_keys, limiter_keys

pytestmark = pytest.mark.redis

#: One take from the ring (ARGV[2]: "pass" or "turns", ARGV[3]: room), returned as the
#: jobs, their tenants and the ring after it.
TAKE = scripts.LuaScript(
    scripts.source("limiter_common")
    + """
bind(KEYS, ARGV)
local take = take_in_turns
if ARGV[2] == 'pass' then take = take_in_pass end
local batch, owners = take(RING, Q.wait_prefix .. 'tenant:', tonumber(ARGV[3]))
return {batch, owners, redis.call('LRANGE', RING, 0, -1)}
"""
)


#: commandstats rows that are not the commands a take ran
NOT_THE_TAKES = frozenset(
    {"cmdstat_evalsha", "cmdstat_script|load", "cmdstat_info", "cmdstat_config|resetstat"}
)


@dataclass(frozen=True)
class Ring:
    """A lane's ring (head first, a tenant possibly twice), each tenant's waiting jobs, and
    the tenants held at their limit."""

    order: list[str]
    waiting: dict[str, int]
    held: set[str]


def a_ring(rng: random.Random) -> Ring:
    tenants = [f"t{i}" for i in range(rng.randint(1, 6))]
    order = rng.sample(tenants, len(tenants))
    if rng.random() < 0.2:  # a tenant listed twice (pushed again after its list emptied)
        order.insert(rng.randrange(len(order) + 1), rng.choice(tenants))
    waiting = {t: rng.choice([0, 1, 2, 5, 20]) for t in tenants}
    held = {t for t in tenants if rng.random() < 0.15}
    return Ring(order, waiting, held)


async def set_up(redis: ArqRedis, ring: Ring) -> None:
    await redis.flushall()
    await redis.rpush(wire.wait_ring_key(TTS_MODEL, "bulk"), *ring.order)
    for tenant, n in ring.waiting.items():
        if n:
            key = wire.wait_list_key(TTS_MODEL, tenant, "bulk")
            await redis.rpush(key, *[f"{tenant}-{j}" for j in range(n)])
    for tenant in ring.held:
        await redis.set(wire.tenant_held_key(tenant), 1)


async def take(redis: ArqRedis, how: str, room: int) -> list[list[str]]:
    limiter = RedisLimiter(LimiterConfig(account="a", window_s=1.0, tenant_holds=True), redis)
    keys = limiter_keys("a", TTS_MODEL) + admission_keys(TTS_MODEL)
    config = wire.dumps(limiter._config(TTS_MODEL))
    reply = await TAKE.run(redis, keys, [config, how, room])
    return [[item.decode() for item in part] for part in reply]


async def test_a_pass_takes_what_the_turns_take_and_leaves_the_ring_as_they_do(
    redis: ArqRedis,
) -> None:
    rng = random.Random(22)
    for _ in range(150):
        ring = a_ring(rng)
        room = rng.randint(1, 40)
        await set_up(redis, ring)
        by_turns = await take(redis, "turns", room)
        await set_up(redis, ring)
        in_a_pass = await take(redis, "pass", room)
        assert in_a_pass == by_turns, (ring, room)


async def test_a_pass_costs_a_few_commands_a_tenant_not_three_a_job(redis: ArqRedis) -> None:
    ring = Ring(["a", "b", "c"], {"a": 20, "b": 20, "c": 20}, set())
    costs: dict[str, int] = {}
    for how in ("turns", "pass"):
        await set_up(redis, ring)
        await redis.config_resetstat()
        batch, owners, order = await take(redis, how, 12)
        stats = await redis.info("commandstats")
        costs[how] = sum(int(v["calls"]) for k, v in stats.items() if k not in NOT_THE_TAKES)
        # round robin from the ring's tail: c, b, a, c, b, a, ...
        assert owners == ["c", "b", "a"] * 4 and len(batch) == 12
        assert order == ["a", "b", "c"]  # four full turns of the ring
    # with tenant limits on (an EXISTS a turn, or a tenant): 4 commands a job against the
    # ring's read and write and 3 a tenant; and each, the test script's read of the ring
    assert costs == {"turns": 4 * 12 + 1, "pass": 3 + 3 * 3 + 1}, costs
