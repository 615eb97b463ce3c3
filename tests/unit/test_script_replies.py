"""mimoq/core/scripts/replies: each script's positional reply becomes named fields (#22).

Table tests of the decoders on replies as Redis sends them (bytes from a plain connection,
str from a decoding one, ints for Lua numbers), then each decoder against its script's real
reply on a redis-server, so a script that changes its reply's shape fails here.
"""

from __future__ import annotations

from typing import Any

import pytest
from arq.connections import ArqRedis

from mimoq.core import scripts, wire
from mimoq.core.scripts import replies
from mimoq.core.scripts.replies import (
    Answer,
    FinishedMany,
    Gate,
    GateVerdict,
    Requeued,
    ResultWrite,
    ResultWritten,
    RunCounted,
    ScriptAnswer,
)


@pytest.mark.parametrize(
    ("reply", "gate"),
    [
        ([b"open", b"0"], Gate(GateVerdict.OPEN, 0.0)),
        (["probe", "2.5"], Gate(GateVerdict.PROBE, 2.5)),
        ([b"paused", b"0.125"], Gate(GateVerdict.PAUSED, 0.125)),
        ([b"expired", b"7"], Gate(GateVerdict.EXPIRED, 7.0)),
    ],
)
def test_a_gate_reply_is_its_verdict_and_seconds(reply: list[Any], gate: Gate) -> None:
    assert replies.decode_gate(reply) == gate


def test_a_gate_verdict_the_breaker_does_not_know_is_refused() -> None:
    with pytest.raises(ValueError, match="'shut'"):
        replies.decode_gate([b"shut", b"0"])


def test_a_cancel_reply_is_one_answer_per_triple_in_order() -> None:
    reply = [b"a", b"cancelled", b'{"f":"speech"}', "b", "already_finished", "failed"]
    reply += [b"c", b"not_found", b""]
    assert replies.decode_cancel(reply) == [
        ScriptAnswer("a", Answer.cancelled, '{"f":"speech"}'),
        ScriptAnswer("b", Answer.already_finished, "failed"),
        ScriptAnswer("c", Answer.not_found, ""),
    ]
    assert replies.decode_cancel([]) == []


@pytest.mark.parametrize(
    ("reply", "counted"),
    [(0, RunCounted.NOT_COUNTED), (1, RunCounted.COUNTED), (b"2", RunCounted.ENDED)],
)
def test_a_run_finish_reply_says_whether_the_run_ended(reply: Any, counted: RunCounted) -> None:
    assert replies.decode_run_finish(reply) is counted


@pytest.mark.parametrize(
    ("reply", "decoded"),
    [
        ([0, 0], FinishedMany(0, False)),
        ([3, 0], FinishedMany(3, False)),
        ([2, 1], FinishedMany(2, True)),
    ],
)
def test_a_finish_many_reply_is_the_count_and_the_end(
    reply: list[int], decoded: FinishedMany
) -> None:
    assert replies.decode_finish_many(reply) == decoded


@pytest.mark.parametrize(
    ("reply", "decoded"),
    [
        ([0, 0], ResultWrite(ResultWritten.CANCELLED, RunCounted.NOT_COUNTED)),
        ([1, 0], ResultWrite(ResultWritten.PUBLISHED, RunCounted.NOT_COUNTED)),
        ([2, 1], ResultWrite(ResultWritten.UNPUBLISHED, RunCounted.COUNTED)),
        ([1, 2], ResultWrite(ResultWritten.PUBLISHED, RunCounted.ENDED)),
    ],
)
def test_a_result_write_reply_is_written_and_counted(
    reply: list[int], decoded: ResultWrite
) -> None:
    assert replies.decode_result_write(reply) == decoded


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [(0, Requeued.NOT_OURS), (1, Requeued.REQUEUED), (2, Requeued.NOTHING_TO_RUN)],
)
def test_a_requeue_reply_is_its_outcome(reply: int, outcome: Requeued) -> None:
    assert replies.decode_requeue(reply) is outcome


@pytest.mark.redis
async def test_the_decoders_read_their_scripts_real_replies(redis: ArqRedis) -> None:
    """Each decoder on what its script answers on Redis: the shapes agree."""
    state, paused, channel = "test:breaker:acct", "test:paused", "test:paused-changed"
    gate = await scripts.named("breaker_gate").run(
        redis, [state, paused], [60, 600, "acct", channel]
    )
    assert replies.decode_gate(gate) == Gate(GateVerdict.OPEN, 0.0)
    await scripts.named("breaker_trip").run(
        redis, [state, paused], ["acct", "why", "x", "", 30, channel]
    )
    paused_gate = replies.decode_gate(
        await scripts.named("breaker_gate").run(redis, [state, paused], [60, 600, "acct", channel])
    )
    assert paused_gate.verdict is GateVerdict.PAUSED and 29 < paused_gate.seconds <= 30

    cancelled = await scripts.named("cancel").run(redis, [], ["queue", "nobody", "bad id!"])
    assert [(a.id, a.answer) for a in replies.decode_cancel(cancelled)] == [
        ("nobody", Answer.not_found),
        ("bad id!", Answer.invalid),
    ]

    run_keys = [wire.run_key("r"), wire.run_pending_key("r"), wire.RUNS_ACTIVE_KEY]
    await scripts.named("run_begin").run(redis, run_keys, ["r", "1", "_", "bulk", "", 60_000])
    await redis.sadd(wire.run_pending_key("r"), "j1", "j2")
    await scripts.named("run_seal").run(redis, run_keys, ["r", "2"])
    finish = scripts.named("run_finish")
    one = await finish.run(redis, run_keys, ["r", "j1", "succeeded", "3"])
    assert replies.decode_run_finish(one) is RunCounted.COUNTED
    again = await finish.run(redis, run_keys, ["r", "j1", "succeeded", "3"])
    assert replies.decode_run_finish(again) is RunCounted.NOT_COUNTED
    many = await scripts.named("run_finish_many").run(redis, run_keys, ["r", "failed", "4", "j2"])
    assert replies.decode_finish_many(many) == FinishedMany(1, True)

    result_keys = [wire.result_key("w"), wire.cancel_key("w")]
    args = ["{}", "60", wire.done_channel("w"), "succeeded"]
    written = await scripts.named("result_unless_cancelled").run(redis, result_keys, args)
    assert replies.decode_result_write(written) == ResultWrite(
        ResultWritten.PUBLISHED, RunCounted.NOT_COUNTED
    )
    await redis.set(wire.cancel_key("w"), "cancelled")
    refused = await scripts.named("result_unless_cancelled").run(redis, result_keys, args)
    assert replies.decode_result_write(refused).written is ResultWritten.CANCELLED

    requeue_keys = [
        wire.INFLIGHT_KEY,
        wire.WORKER_HEARTBEAT_PREFIX + "dead",
        wire.in_progress_key("o"),
        wire.job_key("o"),
        wire.QUEUE_NAME,
    ]
    requeue = scripts.named("orphans_requeue")
    assert replies.decode_requeue(await requeue.run(redis, requeue_keys, ["o", "dead", 1000])) is (
        Requeued.NOT_OURS
    )
    await redis.hset(wire.INFLIGHT_KEY, "o", "dead")
    assert replies.decode_requeue(await requeue.run(redis, requeue_keys, ["o", "dead", 1000])) is (
        Requeued.NOTHING_TO_RUN
    )
    await redis.hset(wire.INFLIGHT_KEY, "o", "dead")
    await redis.set(wire.job_key("o"), "{}")
    assert replies.decode_requeue(await requeue.run(redis, requeue_keys, ["o", "dead", 1000])) is (
        Requeued.REQUEUED
    )
    assert await redis.zscore(wire.QUEUE_NAME, "o")
