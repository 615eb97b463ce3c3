"""Dead letters expire (``MIMOQ_DEAD_LETTER_TTL_S``): the records, their index, the listing
(issue 19, item 7). A real worker dead-letters real deliveries to a receiver answering 410."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import time
from pathlib import Path

import pytest
from arq.connections import ArqRedis

from mimoq.core import deadletters, wire
from mimoq.core.deadletters import DeadLetterReason
from mimoq.worker.callback_delivery import ReplayOutcome, replay_dead_letter
from tests.callbacks.conftest import make_settings, run_worker, schedule
from tests.callbacks.test_cli import lines, mimoq
from tests.callbacks.test_deadletters import NOW, TTL, letter
from tests.conftest import RedisServer
from tests.support.cli import clean_env, mimoq_args
from tests.support.polling import eventually
from tests.support.receiver import Receiver, Response

pytestmark = pytest.mark.redis


async def _index(redis: ArqRedis) -> list[str]:
    return [i.decode() for i in await redis.zrange(wire.DEAD_LETTER_INDEX, 0, -1)]


async def test_dead_letters_written_with_a_short_ttl_disappear_from_redis_and_the_list(
    redis: ArqRedis,
    redis_server: RedisServer,
    receiver: Receiver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings(callbacks={"dead_letter_ttl_s": 1})
    receiver.respond(Response(410), Response(410))
    first = await schedule(redis, receiver, job_id="old-1")
    await run_worker(redis_server, settings)
    capsys.readouterr()  # structlog's default output goes to stdout: not the CLI's
    assert await _index(redis) == [first]
    assert 0 < await redis.pttl(wire.DEAD_LETTER_PREFIX + first) <= 1000
    assert 0 < await redis.pttl(wire.DEAD_LETTER_INDEX) <= 1000

    # The listing says when it goes and how long dead letters are kept.
    assert (
        await asyncio.to_thread(
            mimoq, ["callbacks", "list"], redis_server, callbacks={"dead_letter_ttl_s": 1}
        )
        == 0
    )
    [row] = lines(capsys.readouterr().out)
    assert row["delivery_id"] == first and row["retention_s"] == 1
    assert isinstance(row["expires_at"], float)
    assert time.time() < row["expires_at"] <= time.time() + 1

    await eventually(
        lambda: _gone(redis, wire.DEAD_LETTER_PREFIX + first), what="the dead letter to expire"
    )
    assert (
        await asyncio.to_thread(
            mimoq, ["callbacks", "list"], redis_server, callbacks={"dead_letter_ttl_s": 1}
        )
        == 0
    )
    assert capsys.readouterr().out == ""
    assert await deadletters.get(redis, first) is None

    # The next dead letter's write drops the expired one from the index.
    second = await schedule(redis, receiver, job_id="new-2")
    await run_worker(redis_server, settings)
    assert await _index(redis) == [second]
    # And with no more writes, the index goes with its newest record.
    await eventually(lambda: _gone(redis, wire.DEAD_LETTER_INDEX), what="the index to expire")
    assert await redis.exists(wire.DEAD_LETTER_PREFIX + second) == 0


async def _gone(redis: ArqRedis, key: str) -> bool:
    return await redis.exists(key) == 0


async def test_dead_letters_from_before_retention_are_dropped_once_past_it(
    redis: ArqRedis,
) -> None:
    """Records an older mimoq wrote (no TTL) go when a later write finds them too old;
    one still within retention stays, listed and counted."""
    old, recent = letter(1, dead_at=NOW - 2 * TTL), letter(2, dead_at=NOW - TTL // 2)
    for legacy in (old, recent):  # as the previous version wrote them: no TTL anywhere
        await redis.set(wire.DEAD_LETTER_PREFIX + legacy.delivery_id, legacy.model_dump_json())
        await redis.zadd(wire.DEAD_LETTER_INDEX, {legacy.delivery_id: legacy.dead_at})
    assert await deadletters.count(redis, ttl_s=TTL) == 1  # the old one is past retention

    assert await deadletters.put(redis, letter(3), ttl_s=TTL) == 1
    assert await redis.exists(wire.DEAD_LETTER_PREFIX + old.delivery_id) == 0
    assert await _index(redis) == [recent.delivery_id, "cb-job-3"]
    assert [x.delivery_id async for x in deadletters.iterate(redis)] == ["cb-job-3", "cb-job-2"]
    expiries = await deadletters.expiries(redis, ["cb-job-3", "cb-job-2"])
    assert expiries["cb-job-2"] is None  # no TTL of its own: the index trims it in time
    assert expiries["cb-job-3"] == pytest.approx(time.time() + TTL, abs=60)
    assert 0 < await redis.ttl(wire.DEAD_LETTER_INDEX) <= TTL


async def test_a_replay_that_dies_again_is_kept_for_a_full_retention_again(
    redis: ArqRedis, redis_server: RedisServer, receiver: Receiver
) -> None:
    settings = make_settings(callbacks={"dead_letter_ttl_s": 3600})
    receiver.respond(Response(410), Response(410))
    delivery_id = await schedule(redis, receiver, job_id="again-1")
    await run_worker(redis_server, settings)
    await redis.expire(wire.DEAD_LETTER_PREFIX + delivery_id, 5)  # as if it were nearly due
    assert await replay_dead_letter(redis, delivery_id) is ReplayOutcome.enqueued
    await run_worker(redis_server, settings)
    letter_now = await deadletters.get(redis, delivery_id)
    assert letter_now is not None and letter_now.reason is DeadLetterReason.gone
    assert letter_now.attempts == 2
    assert 3500 < await redis.ttl(wire.DEAD_LETTER_PREFIX + delivery_id) <= 3600


def test_the_list_on_a_terminal_says_how_long_dead_letters_are_kept(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """`mimoq callbacks list` run by a person (stdout a terminal): a table under the
    retention, with when each dead letter expires."""

    async def fill() -> None:
        redis = ArqRedis.from_url(redis_server.url)
        await redis.flushall()
        await deadletters.put(redis, letter(1, job="a", dead_at=time.time() - 7200), ttl_s=TTL)
        await redis.aclose()

    asyncio.run(fill())
    env = clean_env(REDIS_URL=redis_server.url, MIMOQ_DEAD_LETTER_TTL_S=str(TTL))
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(mimoq_args("callbacks", "list"), env=env, cwd=tmp_path,
                              stdout=follower, stderr=subprocess.PIPE, timeout=60, check=False)  # fmt: skip
        os.close(follower)
        follower = -1
        out = _read_all(leader)
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert proc.returncode == 0, proc.stderr
    text = out.decode().replace("\r\n", "\n")
    assert "1 dead letter, newest first; each is kept 30 days after its delivery gave up" in text
    assert "MIMOQ_DEAD_LETTER_TTL_S" in text
    [row] = [line for line in text.splitlines() if line.startswith("cb-a ")]
    assert (
        "exhausted" in row
        and " 500 " in row
        and "2 h ago" in row
        and row.rstrip().endswith("30 days")
    )
    assert not text.lstrip().startswith("{")

    piped = subprocess.run(mimoq_args("callbacks", "list"), env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    [line] = piped.stdout.splitlines()
    assert json.loads(line)["retention_s"] == TTL


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the writer side is closed and drained
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)
