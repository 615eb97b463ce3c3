"""Ctrl-C in `mimoq batch` (mimoq/cli/ctrl_c.py): real SIGINTs to this process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from mimoq.cli.ctrl_c import CtrlC
from mimoq.core import wire
from mimoq.core.connections import embedded
from mimoq.core.jobs import JobResult
from mimoq.core.settings import Settings
from mimoq.producer.batch_plan import PlannedItem
from mimoq.producer.batch_run import BatchRunner
from mimoq.producer.batch_state import ItemStatus, RunFiles
from mimoq.producer.client import Producer
from tests.batch.test_batch_e2e import journaled

DEADLINE_S = 30.0


async def test_the_first_press_cancels_and_is_recorded() -> None:
    ctrl_c = CtrlC()
    with ctrl_c.watch(), pytest.raises(asyncio.CancelledError):
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(DEADLINE_S)
    assert ctrl_c.requested()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back


def test_the_second_press_stops_the_loop_at_once() -> None:
    ctrl_c = CtrlC()

    async def interrupted_twice() -> None:
        with ctrl_c.watch():
            os.kill(os.getpid(), signal.SIGINT)
            try:
                await asyncio.sleep(DEADLINE_S)
            except asyncio.CancelledError:
                os.kill(os.getpid(), signal.SIGINT)  # while it finishes what is in flight
                await asyncio.sleep(DEADLINE_S)

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(interrupted_twice())
    assert ctrl_c.presses == 2


async def test_a_run_stops_on_ctrl_c_even_when_its_cancellation_is_lost(
    tmp_path: Path,
) -> None:
    """The cancellation of the first press vanishes inside a Redis read (as seen with the
    embedded client on a loaded host): the run still stops at its next poll."""
    redis = embedded()
    files = RunFiles(tmp_path, "interrupted-run")
    items = [PlannedItem("line 1", {"kind": "speech", "input": "hi", "id": "s-1"})]
    ctrl_c = CtrlC()
    reading = asyncio.Event()

    async def eta_that_swallows_cancellation() -> float | None:
        reading.set()
        with contextlib.suppress(asyncio.CancelledError):  # what a library may do with it
            await asyncio.sleep(DEADLINE_S)
        return None

    runner = BatchRunner(
        Producer(redis, Settings()), files, items, poll_s=0.01,
        eta_source=eta_that_swallows_cancellation, stop_requested=ctrl_c.requested,
    )  # fmt: skip

    async def interrupted_run() -> None:
        with ctrl_c.watch():  # as mimoq batch does: a first press cancels this task
            await runner.run()  # no worker: the job stays queued, the run would go on

    run = asyncio.create_task(interrupted_run())
    try:
        await asyncio.wait_for(reading.wait(), DEADLINE_S)
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(run, DEADLINE_S)
    finally:
        await redis.aclose()
    assert ctrl_c.requested()
    assert files.path("report.jsonl").is_file()  # the reports are written either way


async def test_an_interrupted_run_journals_a_job_whose_item_it_never_marked_queued(
    tmp_path: Path,
) -> None:
    """An enqueue cut short by Ctrl-C reached Redis but not its item's status; the job ran
    during the interrupt's grace. The run's last look journals its answer all the same."""
    redis = embedded()
    files = RunFiles(tmp_path, "cut-short")
    items = [PlannedItem("line 1", {"kind": "speech", "input": "hi", "id": "s-1"})]
    runner = BatchRunner(Producer(redis, Settings()), files, items)
    done = JobResult(id="s-1", kind="speech", status="succeeded", finished_at=time.time())
    try:
        await redis.set(wire.result_key("s-1"), done.model_dump_json())
        await runner.collect()
    finally:
        await redis.aclose()
    assert [r.status for r in runner.records] == [ItemStatus.succeeded]
    assert list(journaled(tmp_path)) == ["s-1"]
