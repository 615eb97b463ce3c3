"""Contract tests: one per assumption ``mimoq.core.arq_compat`` makes about arq's internals.

Each fails on an arq release that changes what mimoq relies on; the pyproject range for
arq (and for redis, which arq pins) is the range these have passed against.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import arq.connections
import arq.constants
import arq.jobs
import arq.worker
import pytest
from arq.connections import ArqRedis
from arq.worker import Worker
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError

from mimoq.core import arq_compat, scripts, wire
from tests.conftest import RedisServer
from tests.support.commandstats import command_calls

pytestmark = pytest.mark.redis


def test_key_prefixes_are_arqs() -> None:
    assert arq.constants.job_key_prefix == arq_compat.JOB_PREFIX
    assert arq.constants.in_progress_key_prefix == arq_compat.IN_PROGRESS_PREFIX
    assert arq.constants.retry_key_prefix == arq_compat.RETRY_PREFIX
    assert arq.constants.result_key_prefix == arq_compat.RESULT_PREFIX


def test_the_envelope_is_what_arq_serializes() -> None:
    """arq's own serializer, given our JSON serializer, writes exactly our envelope."""
    raw = arq.jobs.serialize_job(
        "speech", (), {"job": {"input": "hi"}}, None, 1234, serializer=wire.serialize
    )
    expected = arq_compat.envelope("speech", {"job": {"input": "hi"}}, enqueued_ms=1234)
    assert json.loads(raw) == expected


async def test_arq_reads_the_envelope_enqueue_lua_writes(redis: ArqRedis) -> None:
    """The hand-written Lua envelope deserializes through arq into the task and its kwargs."""
    job = {"kind": "speech", "model": "mimo-v2.5-tts", "input": "héllo 你好", "voice": "Mia"}
    job_id = "compat-envelope"
    await redis.eval(
        wire.enqueue_script(), 4, *wire.enqueue_keys(job_id), job_id, json.dumps(job), 0
    )
    raw = await redis.get(wire.job_key(job_id))
    parsed = arq.jobs.deserialize_job(raw, deserializer=wire.deserialize)
    assert (parsed.function, list(parsed.args), parsed.kwargs) == ("speech", [], {"job": job})
    assert parsed.job_try is None
    assert abs(parsed.enqueue_time.timestamp() - time.time()) < 60
    assert set(json.loads(raw)) == set(arq_compat.envelope("speech", {}, enqueued_ms=0))


async def test_queue_scores_are_run_at_milliseconds_and_due_ones_are_picked(
    redis_server: RedisServer,
) -> None:
    """arq picks jobs whose score is at or below now (ms) and leaves later ones queued."""
    redis = ArqRedis.from_url(redis_server.url)
    await redis.flushall()
    script = wire.enqueue_script()
    keys_due, keys_later = wire.enqueue_keys("due"), wire.enqueue_keys("later")
    job = json.dumps({"kind": "speech", "model": "mimo-v2.5-tts", "input": "x", "voice": "Mia"})
    await redis.eval(script, 4, *keys_due, "due", job, 0)
    await redis.eval(script, 4, *keys_later, "later", job, 3_600_000)
    seen: list[str] = []
    worker = _plain_worker(
        redis,
        seen,
        burst=True,
        max_burst_jobs=1,  # burst mode alone would wait for the deferred job too
        poll_delay=0.01,
    )
    await worker.main()
    await worker.close()
    assert seen == ["due"]
    score = await redis.zscore(wire.QUEUE_NAME, "later")
    assert score is not None and score > time.time() * 1000
    await redis.aclose()


async def test_in_progress_keys_live_for_the_job_timeout_plus_arqs_margin() -> None:
    # async: with no running loop, arq's Worker() creates an event loop it never closes.
    async def task(ctx: dict[str, object]) -> None:
        return None

    worker = Worker(
        functions=[arq.worker.func(task, name="task")],
        job_timeout=30,
        redis_pool=object(),  # type: ignore[arg-type]  # never used: nothing is run
        handle_signals=False,
    )
    assert worker.in_progress_timeout_s == arq_compat.in_progress_ttl_s(30)


@pytest.mark.parametrize("name", arq_compat.OVERRIDDEN_WORKER_METHODS)
def test_overridden_worker_methods_exist_with_the_signatures_we_override(name: str) -> None:
    from mimoq.worker.arq_worker import MimoqWorker

    theirs = inspect.signature(getattr(Worker, name))
    ours = inspect.signature(getattr(MimoqWorker, name))
    assert inspect.iscoroutinefunction(getattr(Worker, name))
    assert list(theirs.parameters) == list(ours.parameters)


def test_start_up_info_logging_is_a_replaceable_module_function() -> None:
    arq_compat.tolerate_missing_info()
    assert callable(arq.connections.log_redis_info)
    assert arq.worker.log_redis_info is arq_compat._tolerant_log_redis_info  # type: ignore[attr-defined]


def _plain_worker(
    redis: ArqRedis,
    seen: list[str],
    task: Callable[[dict[str, object], object], Awaitable[None]] | None = None,
    worker_class: type[Worker] = Worker,
    **options: Any,
) -> Worker:
    """An arq Worker (or ``worker_class``) of mimoq's queue and job format whose speech task
    records its id (or is ``task``)."""

    async def speech(ctx: dict[str, object], job: object) -> None:
        seen.append(str(ctx["job_id"]))

    return worker_class(
        functions=[arq.worker.func(task or speech, name="speech")],
        redis_pool=redis,
        queue_name=wire.QUEUE_NAME,
        job_serializer=wire.serialize,
        job_deserializer=wire.deserialize,
        handle_signals=False,
        keep_result=0,
        **options,
    )


async def _queue_cases(redis: ArqRedis) -> float:
    """Jobs in each state start_jobs tells apart; returns now (ms), past every due score."""
    job = json.dumps({"kind": "speech", "model": "mimo-v2.5-tts", "input": "x", "voice": "Mia"})
    for job_id in ("due", "elsewhere", "mine", "deferred", "zero"):
        await redis.eval(wire.enqueue_script(), 4, *wire.enqueue_keys(job_id), job_id, job, 0)
    # scored on Redis TIME: due from the highest score on, whatever this clock says
    (_, newest), *_ = await redis.zrange(wire.QUEUE_NAME, -1, -1, withscores=True)
    now_ms = max(time.time() * 1000, newest)
    await redis.zadd(wire.QUEUE_NAME, {"deferred": now_ms + 60_000, "zero": 0})
    await redis.set(arq_compat.IN_PROGRESS_PREFIX + "elsewhere", b"1")
    return now_ms


@pytest.mark.parametrize("taker", ["arq", "start_claimed"])
async def test_start_claimed_takes_what_arqs_start_jobs_takes(redis: ArqRedis, taker: str) -> None:
    """start_claimed (one script per job) takes exactly the jobs arq's own start_jobs takes:
    due and queued, not running elsewhere, not deferred, not scored 0 ("not queued"); it runs
    them through run_job and gives every slot back."""
    await _queue_cases(redis)
    seen: list[str] = []
    worker = _plain_worker(redis, seen)
    ids = [b"due", b"elsewhere", b"deferred", b"zero", b"finished"]
    free = worker.sem._value
    if taker == "arq":
        await worker.start_jobs(ids)
    else:
        await arq_compat.start_claimed(worker, ids)
    assert set(worker.tasks) == {"due"}
    await asyncio.gather(*worker.tasks.values())
    assert seen == ["due"]
    assert worker.job_counter == 0 and worker.sem._value == free
    # taken: its in-progress key lives arq's in-progress timeout
    ttl = await redis.pttl(arq_compat.IN_PROGRESS_PREFIX + "due")
    assert ttl == -2 or 0 < ttl <= worker.in_progress_timeout_s * 1000  # -2: it finished
    await worker.close()


async def test_a_claim_reads_the_keys_its_run_reads_first_and_leaves_nothing_behind(
    redis: ArqRedis,
) -> None:
    """With ``read_keys``, the claim that takes a job also reads those keys (a missing one
    as None) and leaves their values for the job's run while its task runs; a job it does
    not take, and a task that ended, leave nothing in ``reads``."""
    await _queue_cases(redis)
    await redis.set("test:first:due:a", b"2")
    reads: dict[str, list[object]] = {}
    during: dict[str, object] = {}

    async def speech(ctx: dict[str, object], job: object) -> None:
        during[str(ctx["job_id"])] = reads.get(str(ctx["job_id"]))

    worker = _plain_worker(redis, [], speech)
    await arq_compat.start_claimed(
        worker,
        [b"due", b"elsewhere", b"deferred"],
        read_keys=lambda job_id: (f"test:first:{job_id}:a", f"test:first:{job_id}:b"),
        reads=reads,
    )
    assert set(worker.tasks) == {"due"} and set(reads) == {"due"}
    await asyncio.gather(*worker.tasks.values())
    assert during == {"due": [b"2", None]}
    assert reads == {}
    # a claim without read_keys answers the score alone, as arq's own take would give it
    score = await redis.zscore(wire.QUEUE_NAME, "mine")
    claim = scripts.named("arq_claim")
    keys = [arq_compat.IN_PROGRESS_PREFIX + "mine", wire.QUEUE_NAME]
    assert await claim.run(redis, keys, ["mine", 2**53, 60_000, "t"]) == [str(int(score)).encode()]
    await worker.close()


class _StartsWorker(arq_compat.ClaimedStarts, Worker):
    """An arq Worker whose claimed jobs' runs start from their claim's reads (item 11)."""


async def test_a_claimed_start_makes_arqs_first_transaction_in_the_claim(
    redis: ArqRedis,
) -> None:
    """Item 11: with ``ClaimedStarts``, the claim reads the job and counts its try, and
    run_job's own first transaction (GET, INCR, EXPIRE in MULTI/EXEC) is answered from that:
    the run sees the same try arq would count, and only arq's finish sends a MULTI/EXEC. The
    contract: were arq's start other than this, it would be sent as well (a second MULTI)
    and the try counted twice."""
    await _queue_cases(redis)
    tries: list[object] = []

    async def speech(ctx: dict[str, object], job: object) -> None:
        tries.append(ctx["job_try"])
        raise arq_compat.retry_where_queued()

    worker = _plain_worker(redis, [], speech, worker_class=_StartsWorker)
    for _ in range(2):
        await redis.config_resetstat()
        await arq_compat.start_claimed(worker, [b"due"])
        await asyncio.gather(*worker.tasks.values())
        stats = await redis.info("commandstats")
        # one MULTI: arq's own finish_job (this worker does not replace it); no INCR: the
        # claim writes the try with a SET, and arq's own start would count it with one
        assert stats["cmdstat_multi"]["calls"] == 1 and "cmdstat_incr" not in stats
    assert tries == [1, 2]
    assert 0 < await redis.ttl(arq_compat.RETRY_PREFIX + "due") <= arq_compat.RETRY_TTL_S
    # outside a claimed run the pool is the pool itself
    assert worker.pool is redis
    await worker.close()


async def test_a_claim_sent_again_reads_the_try_its_first_sending_counted(
    redis: ArqRedis,
) -> None:
    now_ms = await _queue_cases(redis)
    claim = scripts.named("arq_claim")
    keys = [
        arq_compat.IN_PROGRESS_PREFIX + "due", wire.QUEUE_NAME,
        arq_compat.JOB_PREFIX + "due", arq_compat.RETRY_PREFIX + "due",
    ]  # fmt: skip
    args = ["due", now_ms, 60_000, "token-a", arq_compat.RETRY_TTL_S]
    first = await claim.run(redis, keys, args)
    again = await claim.run(redis, keys, args)
    assert first[2] == again[2] == 1
    assert first[1] == again[1] == await redis.get(arq_compat.JOB_PREFIX + "due")


async def test_a_claim_reads_the_job_and_its_runs_keys_in_one_mget(redis: ArqRedis) -> None:
    """A taken job costs its claim four commands: the in-progress SET, the queue's ZSCORE,
    one MGET of the job, its try and the keys its run reads first, and the try's SET with
    its TTL (a GET of the job of its own was one more, 1.2 a job of the issue #22 mix, and
    the try's INCR and EXPIRE one more than its SET, 1.4). A claim sent again reads the try
    in the same MGET and writes nothing."""
    now_ms = await _queue_cases(redis)
    await redis.set("test:first:due:a", b"2")
    claim = scripts.named("arq_claim")
    keys = [
        arq_compat.IN_PROGRESS_PREFIX + "due", wire.QUEUE_NAME,
        arq_compat.JOB_PREFIX + "due", arq_compat.RETRY_PREFIX + "due",
        "test:first:due:a", "test:first:due:b",
    ]  # fmt: skip
    args = ["due", now_ms, 60_000, "token-a", arq_compat.RETRY_TTL_S]
    job = await redis.get(arq_compat.JOB_PREFIX + "due")
    await claim.run(redis, keys, args)  # (loads the script)
    await redis.delete(arq_compat.IN_PROGRESS_PREFIX + "due", arq_compat.RETRY_PREFIX + "due")
    await redis.config_resetstat()
    taken = await claim.run(redis, keys, args)
    calls = await command_calls(redis)
    assert taken[1:] == [job, 1, b"2", None]
    assert calls == {"evalsha": 1, "set": 2, "zscore": 1, "mget": 1}
    retry_key = arq_compat.RETRY_PREFIX + "due"
    assert 0 < await redis.ttl(retry_key) <= arq_compat.RETRY_TTL_S
    await redis.config_resetstat()
    assert (await claim.run(redis, keys, args))[1:] == [job, 1, b"2", None]
    assert await command_calls(redis) == {"evalsha": 1, "set": 1, "zscore": 1, "mget": 1}
    assert await redis.get(retry_key) == b"1"


async def test_a_start_other_than_the_claims_is_sent_as_it_was_asked(redis: ArqRedis) -> None:
    """An arq whose run_job started otherwise: its commands go to Redis, in their order."""
    await redis.set("test:start:x", b"7")
    start = arq_compat._ClaimedStart("x", b"job", 1)
    pool = arq_compat._RunPool(redis, start)
    async with pool.pipeline(transaction=True) as pipe:
        pipe.get("test:start:x")
        pipe.incr("test:start:x")
        replies = await pipe.execute()
    assert replies == [b"7", 8]
    assert start.used
    assert isinstance(pool.pipeline(), Pipeline)  # later pipelines are the pool's own


async def test_still_due_drops_what_start_jobs_would_skip(redis: ArqRedis) -> None:
    """``still_due`` drops a job running elsewhere, finished, deferred past now (and this
    worker's own running jobs); a lone id is left to the claim."""
    now_ms = await _queue_cases(redis)
    queue = wire.QUEUE_NAME
    ids = [b"due", b"elsewhere", b"mine", b"deferred", b"finished"]
    kept = await arq_compat.still_due(redis, queue, ids, {"mine"}, now_ms)
    assert kept == [b"due"]
    assert await arq_compat.still_due(redis, queue, [b"finished"], (), now_ms) == [b"finished"]


async def test_start_claimed_gives_the_slot_back_when_redis_fails(redis: ArqRedis) -> None:
    """A claim that fails (Redis gone past the client's retries) leaves no slot counted:
    the error goes on to arq's loop, the worker's capacity stays whole."""

    class Down:
        async def evalsha(self, *args: object) -> object:
            raise RedisConnectionError("down")

    worker = _plain_worker(redis, [])
    free = worker.sem._value
    worker._pool = Down()  # type: ignore[assignment]
    with pytest.raises(RedisConnectionError):
        await arq_compat.start_claimed(worker, [b"due"])
    assert worker.job_counter == 0 and worker.sem._value == free and worker.tasks == {}
    worker._pool = redis
    await worker.close()


async def test_start_claimed_takes_nothing_once_the_worker_stops(redis: ArqRedis) -> None:
    """A pick under way when the worker began to stop leaves its jobs queued for others."""
    await _queue_cases(redis)
    worker = _plain_worker(redis, [])
    free = worker.sem._value
    worker.allow_pick_jobs = False
    await arq_compat.start_claimed(worker, [b"due"])
    assert worker.tasks == {} and worker.job_counter == 0 and worker.sem._value == free
    assert not await redis.exists(arq_compat.IN_PROGRESS_PREFIX + "due")
    await worker.close()


async def test_a_claim_sent_again_after_its_reply_was_lost_still_takes_its_job(
    redis: ArqRedis,
) -> None:
    """The client retries a claim whose reply an outage lost after the script ran: the
    retry finds its own token and takes the job; another claim still cannot."""
    now_ms = await _queue_cases(redis)
    claim = scripts.named("arq_claim")
    keys = [arq_compat.IN_PROGRESS_PREFIX + "due", wire.QUEUE_NAME]
    first = await claim.run(redis, keys, ["due", now_ms, 60_000, "token-a"])
    assert first is not None
    assert await claim.run(redis, keys, ["due", now_ms, 60_000, "token-a"]) == first
    assert await claim.run(redis, keys, ["due", now_ms, 60_000, "token-b"]) is None


@pytest.mark.parametrize("retry", ["where_queued", "defer"])
async def test_a_retry_where_queued_keeps_the_score_its_task_set(
    redis: ArqRedis, retry: str
) -> None:
    """Item 9: a task that puts its job's queue score at its slot and raises
    ``retry_where_queued()`` is run again at that score; arq's ``Retry(defer=d)`` would
    instead add d and the time since the job was taken to whatever the score is by then."""
    job = json.dumps({"kind": "speech", "model": "mimo-v2.5-tts", "input": "x", "voice": "Mia"})
    await redis.eval(wire.enqueue_script(), 4, *wire.enqueue_keys("held"), "held", job, 0)
    slot_ms = time.time() * 1000 + 3_600_000

    async def speech(ctx: dict[str, object], job: object) -> None:
        await redis.zadd(wire.QUEUE_NAME, {"held": slot_ms})  # as limiter_acquire.lua does
        if retry == "where_queued":
            raise arq_compat.retry_where_queued()
        raise arq.worker.Retry(defer=60)

    worker = _plain_worker(redis, [], speech, burst=True, max_burst_jobs=1, poll_delay=0.01)
    await worker.main()
    await worker.close()
    score = await redis.zscore(wire.QUEUE_NAME, "held")
    assert worker.jobs_retried == 1
    assert not await redis.exists(arq_compat.IN_PROGRESS_PREFIX + "held")
    if retry == "where_queued":
        assert score == slot_ms
    else:
        assert score is not None and score >= slot_ms + 60_000


async def test_tries_counted_outside_arq_make_its_next_run_the_try_after(
    redis: ArqRedis,
) -> None:
    """Item 10: ``count_tries(…, tries=1)`` before arq's first run of a job makes that run
    ``job_try`` 2 (an inline callback attempt was try 1); without it, the run is try 1."""
    job = json.dumps({"kind": "speech", "model": "mimo-v2.5-tts", "input": "x", "voice": "Mia"})
    tries: dict[str, object] = {}

    async def speech(ctx: dict[str, object], job: object) -> None:
        tries[str(ctx["job_id"])] = ctx["job_try"]

    for job_id in ("counted", "plain"):
        await redis.eval(wire.enqueue_script(), 4, *wire.enqueue_keys(job_id), job_id, job, 0)
    async with redis.pipeline(transaction=False) as pipe:
        arq_compat.count_tries(pipe, "counted", tries=1, ttl_ms=60_000)
        await pipe.execute()
    worker = _plain_worker(redis, [], speech, burst=True, poll_delay=0.01)
    await worker.main()
    await worker.close()
    assert tries == {"counted": 2, "plain": 1}


async def _finish_state(redis: ArqRedis) -> dict[str, object]:
    return {
        "in_progress": await redis.exists(arq_compat.IN_PROGRESS_PREFIX + "run"),
        "job": await redis.exists(arq_compat.JOB_PREFIX + "run"),
        "retry": await redis.get(arq_compat.RETRY_PREFIX + "run"),
        "score": await redis.zscore(wire.QUEUE_NAME, "run"),
        "result": await redis.exists(arq_compat.RESULT_PREFIX + "run"),
        "result_ttl": await redis.pttl(arq_compat.RESULT_PREFIX + "run") > 0,
        "in_progress_ttl": await redis.pttl(arq_compat.IN_PROGRESS_PREFIX + "run") > 0,
        "aborting": await redis.zscore("arq:abort", "run"),
    }


@pytest.mark.parametrize(
    ("finish", "result_data", "incr_score", "keep_in_progress", "commands"),
    [
        (False, None, None, None, {"del": 1}),  # retry_where_queued; cancelled, run again
        (False, None, 0, None, {"del": 1}),  # (arq moves nothing for a zero score either)
        (False, None, None, 30.0, {"pexpire": 1}),  # a cron job keeps its in-progress key
        (True, None, None, None, {"zrem": 2, "del": 1}),  # finished (mimoq keeps no arq result)
        (True, b"r", None, None, {"set": 1, "zrem": 2, "del": 1}),  # ... or with arq's result
        (False, None, 5_000, None, None),  # Retry(defer=…): arq's own relative ZINCRBY
    ],
)
@pytest.mark.parametrize("aborts", [True, False])
async def test_finish_in_pipeline_leaves_what_arqs_finish_job_leaves_without_multi(
    redis: ArqRedis,
    finish: bool,
    result_data: bytes | None,
    incr_score: int | None,
    keep_in_progress: float | None,
    commands: dict[str, int] | None,
    aborts: bool,
) -> None:
    """Item 9: ``finish_in_pipeline`` leaves the state arq's own ``finish_job`` leaves, with
    its commands and no MULTI/EXEC; a relative move (not idempotent) is left to arq. A
    worker that allows no aborts never puts a job in arq's abort set, and is not sent the
    ZREM that takes it out."""
    worker = _plain_worker(redis, [], allow_abort_jobs=aborts)
    if commands is not None and finish and not aborts:
        commands = {**commands, "zrem": commands["zrem"] - 1}
    states = []
    for finisher in ("arq", "ours"):
        await redis.flushall()
        await redis.set(arq_compat.JOB_PREFIX + "run", b"{}")
        await redis.set(arq_compat.RETRY_PREFIX + "run", b"1")
        await redis.set(arq_compat.IN_PROGRESS_PREFIX + "run", b"1")
        await redis.zadd(wire.QUEUE_NAME, {"run": 1_000})
        if aborts:
            await redis.zadd("arq:abort", {"run": 1})
        await redis.config_resetstat()
        args = (finish, result_data, 60, False, incr_score, keep_in_progress)
        if finisher == "arq":
            await Worker.finish_job(worker, "run", *args)
        else:
            done = await arq_compat.finish_in_pipeline(
                worker, "run", finish=finish, result_data=result_data, result_timeout_s=60,
                keep_result_forever=False, incr_score=incr_score,
                keep_in_progress=keep_in_progress,
            )  # fmt: skip
            assert done is (commands is not None)
            if not done:
                assert set(await redis.info("commandstats")) == {"cmdstat_config|resetstat"}
                continue
            stats = await redis.info("commandstats")
            sent = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}
            sent.pop("config|resetstat")
            assert sent == commands
        states.append(await _finish_state(redis))
    assert states[0] == states[-1]
