"""A long recording cancelled while it waits for its chunks leaves no chunk files behind
(docs/cancel.md), on local disk and in a real S3 bucket (SeaweedFS on loopback).

The parent is split into chunk files under ``chunks/<parent>/`` in storage, its chunk jobs'
calls are slow (the simulator holds each for 6 s), and the parent is cancelled through
``Producer.cancel``: its record says cancelled and the chunk files are gone, instead of
staying until storage's own clean-up.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import obstore
import pytest
from arq.connections import ArqRedis

from mimoq.core import scripts, wire
from mimoq.core.objstore import ObjectStorage, open_storage
from mimoq.core.settings import Settings
from mimoq.producer.cancel import CancelStatus
from mimoq.producer.client import Producer
from mimoq.sim.faults import Fault
from mimoq.sim.sim_server import RunningSim
from tests.conftest import RedisServer
from tests.e2e.conftest import e2e_settings, running_worker
from tests.storage.test_s3_fleet import _long_recording
from tests.support.polling import eventually

pytestmark = [pytest.mark.redis, pytest.mark.slow]

PARENT = "long-cancelled"
_CANCEL_LUA = scripts.source("cancel")


async def _waiting_for_chunks(producer: Producer) -> bool:
    return (await producer.status(PARENT)).status.value == "deferred"


async def _cancel_while_chunks_run(
    redis: ArqRedis, settings: Settings, sim: RunningSim, chunk_files: Callable[[], list[str]],
    *, by_script: bool = False,
) -> None:  # fmt: skip
    # every call is slow: the chunks are in flight while the parent waits in the queue
    sim.state.add_fault(Fault(kind="latency", ms=6_000, times=None))
    recording = _long_recording(settings.storage.data_dir.parent / "long.wav", 6)
    producer = Producer(redis, settings, open_storage(settings))
    try:
        async with running_worker(settings):
            await producer.enqueue({"kind": "transcription", "file": str(recording), "id": PARENT})
            await eventually(
                lambda: redis.exists(wire.fanout_key(PARENT)), timeout_s=60, what="the plan"
            )
            assert len(chunk_files()) >= 2  # split: the chunks' input audio is in storage
            await eventually(lambda: sim.state.stats()["in_flight"] >= 1, timeout_s=30)
            # the parent's run that planned the chunks has ended (its chunks may start
            # before it does): cancelled while that run was still in flight, it answered
            # "stopping", as a running job's cancel does
            await eventually(
                lambda: _waiting_for_chunks(producer), timeout_s=30, what="the parent deferred"
            )
            if by_script:  # any language's cancel: a worker records the parent, and cleans up
                answer = await redis.eval(_CANCEL_LUA, 0, "queue", PARENT)
                assert answer[:2] == [PARENT.encode(), b"cancelled"]
            else:  # the caller records it (and removes its chunk files)
                assert (await producer.cancel(PARENT)).status is CancelStatus.cancelled
            parent = await producer.wait(PARENT, timeout_s=10)
            assert parent.status == "cancelled"
            await eventually(lambda: chunk_files() == [], timeout_s=10, what="no chunk files")
    finally:
        sim.state.clear_faults()


@pytest.mark.parametrize("by_script", [False, True], ids=["producer", "cancel.lua-queue"])
async def test_local_chunk_files_are_deleted_with_the_parent(
    redis: ArqRedis, redis_server: RedisServer, sim: RunningSim, tmp_path: Path, by_script: bool
) -> None:
    settings = e2e_settings(redis_server, sim, tmp_path / "data")
    chunks = settings.storage.data_dir / "chunks" / PARENT

    def chunk_files() -> list[str]:
        return sorted(p.name for p in chunks.glob("*")) if chunks.exists() else []

    await _cancel_while_chunks_run(redis, settings, sim, chunk_files, by_script=by_script)


async def test_s3_chunk_objects_are_deleted_with_the_parent(
    redis: ArqRedis, redis_server: RedisServer, sim: RunningSim, tmp_path: Path,
    bucket_url: str,
) -> None:  # fmt: skip
    settings = e2e_settings(redis_server, sim, tmp_path / "data", storage={"url": bucket_url})
    storage = open_storage(settings)
    assert isinstance(storage, ObjectStorage)
    prefix = f"fleet/chunks/{PARENT}/"

    def chunk_files() -> list[str]:
        return [o["path"] for o in obstore.list(storage.store, prefix=prefix).collect()]

    await _cancel_while_chunks_run(redis, settings, sim, chunk_files)
