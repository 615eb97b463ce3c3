"""tests/worker/virtual_time.py: the clock moves only when every coroutine is asleep."""

from __future__ import annotations

import asyncio

import pytest
from arq.connections import ArqRedis

from tests.worker.virtual_time import VirtualTime


async def test_sleepers_wake_in_virtual_time_order_and_results_keep_their_order() -> None:
    vt = VirtualTime(start=100.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, delays: list[float]) -> str:
        for delay in delays:
            await vt.sleep(delay)
            woke.append((name, vt.clock()))
        return name

    # an hour of virtual sleeps: the test would time out if any of it were real
    results = await vt.gather(sleeper("a", [3600.0]), sleeper("b", [1.0, 1.0]), sleeper("c", [1.5]))
    assert results == ["a", "b", "c"]
    assert woke == [("b", 101.0), ("c", 101.5), ("b", 102.0), ("a", 3700.0)]
    assert vt.clock() == 3700.0


async def test_sleepers_due_at_the_same_instant_wake_together_in_parking_order() -> None:
    vt = VirtualTime(start=0.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, delay: float) -> None:
        await vt.sleep(delay)
        woke.append((name, vt.clock()))
        await vt.sleep(0)  # parks, and resumes at the same instant
        woke.append((name + "'", vt.clock()))

    await vt.gather(sleeper("x", 2.0), sleeper("y", 1.0), sleeper("z", 2.0))
    assert woke == [("y", 1.0), ("y'", 1.0), ("x", 2.0), ("z", 2.0), ("x'", 2.0), ("z'", 2.0)]


@pytest.mark.redis
async def test_the_clock_does_not_move_while_a_coroutine_awaits_real_io(redis: ArqRedis) -> None:
    """A coroutine in a Redis round trip is running: the sleeper must not be woken (and
    the clock must not jump) until it parks too."""
    vt = VirtualTime(start=0.0)
    seen: list[float] = []

    async def busy() -> None:
        for _ in range(50):
            await redis.incr("n")
            seen.append(vt.clock())
        await vt.sleep(0.5)
        seen.append(vt.clock())

    async def sleeper() -> float:
        await vt.sleep(0.25)
        return float(await redis.get("n"))

    _, n_at_wake = await vt.gather(busy(), sleeper())
    assert seen == [0.0] * 50 + [0.5]
    assert n_at_wake == 50  # all of busy's I/O ran before the clock moved


async def test_an_error_cancels_the_other_coroutines_and_is_raised() -> None:
    vt = VirtualTime()
    cancelled: list[str] = []

    async def long_sleeper() -> None:
        try:
            await vt.sleep(60)
        except asyncio.CancelledError:
            cancelled.append("long")
            raise

    async def failing() -> None:
        await vt.sleep(1)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await vt.gather(long_sleeper(), failing())
    assert cancelled == ["long"]
    assert await vt.run(asyncio.sleep(0, result="reusable")) == "reusable"


async def test_sleep_outside_gather_is_refused() -> None:
    vt = VirtualTime()
    with pytest.raises(RuntimeError, match="outside"):
        await vt.sleep(1)
