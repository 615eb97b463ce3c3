"""drain_and_close: every job that runs gets the grace, also one started after it began."""

from __future__ import annotations

import asyncio
from typing import Any

from mimoq.worker.arq_worker import drain_and_close


class _Worker:
    """What drain_and_close touches of an arq worker."""

    def __init__(self) -> None:
        self.allow_pick_jobs = True
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.closed_with: list[str] = []

    async def close(self) -> None:
        self.closed_with = [j for j, t in self.tasks.items() if not t.done()]
        for task in self.tasks.values():
            task.cancel()


async def test_a_job_started_by_a_pick_under_way_is_waited_for() -> None:
    worker = _Worker()
    answered: list[str] = []

    async def call(job_id: str, answer: asyncio.Event) -> None:
        await answer.wait()
        answered.append(job_id)

    early_answer, late_answer = asyncio.Event(), asyncio.Event()
    worker.tasks["early"] = asyncio.create_task(call("early", early_answer))

    async def late_pick() -> None:
        # a pick that was waiting for a slot when the drain began starts its job anyway,
        # and that job's answer comes after every other job has ended
        await asyncio.sleep(0)
        worker.tasks["late"] = asyncio.create_task(call("late", late_answer))
        early_answer.set()
        await worker.tasks["early"]
        await asyncio.sleep(0)
        late_answer.set()

    picking = asyncio.create_task(late_pick())
    await asyncio.wait_for(drain_and_close(worker, grace_s=30), 30)  # type: ignore[arg-type]
    await picking
    assert answered == ["early", "late"] and worker.closed_with == []
    assert worker.allow_pick_jobs is False


async def test_the_grace_still_ends_it() -> None:
    worker = _Worker()
    worker.tasks["stuck"] = asyncio.create_task(asyncio.Event().wait())
    await asyncio.wait_for(drain_and_close(worker, grace_s=0.05), 30)  # type: ignore[arg-type]
    assert worker.closed_with == ["stuck"]
