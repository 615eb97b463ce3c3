"""Every assumption mimoq makes about arq's internals, in one place.

arq's public API (``Worker``, ``func``, ``Retry``, ``ArqRedis``) is used wherever it fits.
What is *not* public API, and what mimoq nonetheless relies on, is listed here, each with a
contract test in ``tests/unit/test_arq_compat.py`` that fails on an arq release that changes
it. The dependency range in ``pyproject.toml`` is the range those tests have run against.

1. The Redis key prefixes arq writes (``arq.constants``).
2. The job envelope: a serialized dict ``{"t", "f", "a", "k", "et"}`` — try, function name,
   args, kwargs, enqueue time in ms. ``enqueue.lua`` writes it by hand so that any language
   can enqueue through one atomic script.
3. The queue is a sorted set scored by run-at time in ms; a job is due when its score is at
   or below now. (Score 0 is "not queued" to arq's enqueue guard, never a run-at time.)
4. A job left running by a dead worker is picked again once its in-progress key expires,
   ``job_timeout + IN_PROGRESS_EXTRA_S`` after it was taken. Deleting that key (with the job still
   queued) makes it due again at once: ``worker/orphans.py`` does so for dead workers.
5. ``Worker`` methods mimoq overrides: ``main``, ``heart_beat``, ``close``,
   ``finish_failed_job``, ``finish_job`` and ``start_jobs`` (names and signatures).
6. ``arq.worker.log_redis_info`` is a module-level function the worker calls at start-up
   (it is replaced with a tolerant version: the embedded stand-in has no ``INFO``).
7. A running job stays in the queue until it finishes, and ``start_jobs`` skips a job whose
   in-progress key exists: a worker may leave such ids out before ``start_jobs`` sees them.
8. How ``start_jobs`` takes a job (an in-progress key set only if none exists and the job is
   queued and due, then ``run_job(id, score)`` in a task that gives back ``job_counter``
   and ``sem`` when done): ``start_claimed`` does the same with one script per job, which
   also reads the keys the job's run reads first.
9. ``Retry(defer=d)`` moves the job's queue score by ``d`` plus the time since the score
   it was taken at (a relative ``ZINCRBY``); ``Retry()`` with no defer leaves the score as
   it is and only drops the in-progress key: ``retry_where_queued``. ``finish_job`` wraps
   its clean-up in MULTI/EXEC; ``finish_in_pipeline`` sends the same commands without it
   when none of them is the relative move, and without the ``ZREM`` of arq's abort set
   when the worker does not allow aborts (arq then never reads that set).
10. A run's ``job_try`` is ``INCR arq:retry:<id>`` at its start: a job tried once outside
    arq (an inline callback attempt) is its try 2 when arq runs it next: ``count_tries``.
11. ``run_job`` starts with one transaction on ``Worker.pool`` (a property): ``GET`` of the
    job, ``INCR`` of its try count and ``EXPIRE`` of it (``RETRY_TTL_S``), plus a ``ZREM``
    of the abort set where aborts are allowed. A worker that is a ``ClaimedStarts`` (and
    allows no aborts) has its claim do that inside the script, and that transaction
    answered from the claim's reply: no round trip, no ``MULTI``/``EXEC``. The claim reads
    the try with the job and writes it back one more with its TTL (one ``SET``): the same
    count and TTL as arq's ``INCR`` and ``EXPIRE``.
"""

from __future__ import annotations

import contextvars
import functools
import secrets
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import arq.connections
import arq.constants
import arq.utils
import arq.worker
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from mimoq.core import scripts

# --- 1. keys ------------------------------------------------------------------------------
JOB_PREFIX: Final = "arq:job:"
IN_PROGRESS_PREFIX: Final = "arq:in-progress:"
RETRY_PREFIX: Final = "arq:retry:"
RESULT_PREFIX: Final = "arq:result:"


# --- 2. envelope ----------------------------------------------------------------------------
def envelope(task: str, kwargs: dict[str, Any], *, enqueued_ms: int) -> dict[str, Any]:
    """arq's job envelope for ``task(**kwargs)``, before serialization (try not yet set).

    Python writers (callback deliveries) use this; ``enqueue.lua`` writes the same shape by
    hand for producers in any language, and a contract test holds both to arq's own.
    """
    return {"t": None, "f": task, "a": [], "k": kwargs, "et": enqueued_ms}


# --- 4. re-running a dead worker's job -----------------------------------------------------
#: arq keeps a taken job's in-progress key for the job timeout plus this many seconds.
IN_PROGRESS_EXTRA_S: Final = 10.0


def in_progress_ttl_s(job_timeout_s: float) -> float:
    """How long after a worker took a job another worker may take it again, if it died."""
    return job_timeout_s + IN_PROGRESS_EXTRA_S


# --- 7. picking: running jobs are still queued ---------------------------------------------
async def free_slots(worker: arq.worker.Worker) -> int:
    """The worker's free job slots, once it has one (it waits for a running job to end)."""
    await worker.sem.acquire()  # start_jobs takes a slot this way for each id it starts
    worker.sem.release()
    return max(1, worker.max_jobs - worker.job_counter)


async def still_due(
    redis: Any, queue: str, job_ids: list[bytes], own: Collection[str], now_ms: float
) -> list[bytes]:
    """Those of ``job_ids`` that ``start_jobs`` could still take: not running (``own``: this
    worker's; others' by their in-progress keys), still queued, and due by ``now_ms``. One
    round trip of two commands for them all; a lone id is left to arq's own check (2
    commands to save the 4 of a failed try would cost more than they save on a quiet queue).

    A poll reads up to 5 x max_jobs due ids and ``start_jobs`` tries them one by one as slots
    free, spending a WATCH, EXISTS, ZSCORE and UNWATCH on each it cannot take: the running
    jobs at the head of the queue (arq leaves a running job queued until it ends), and by
    the time a slot frees, ids that have finished or were deferred meanwhile. What this
    drops, ``start_jobs`` would have skipped; a job taken after this read is still caught by
    arq's own WATCH.
    """
    ids = [j for j in job_ids if j.decode() not in own]
    if len(ids) < 2:
        return ids
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zmscore(queue, ids)
        pipe.mget([IN_PROGRESS_PREFIX + j.decode() for j in ids])
        scores, taken = await pipe.execute()
    return [
        j
        for j, score, key in zip(ids, scores, taken, strict=True)
        if key is None and score is not None and score <= now_ms
    ]


# --- 8. taking a job: one script -----------------------------------------------------------
async def start_claimed(
    worker: arq.worker.Worker,
    job_ids: list[bytes],
    *,
    read_keys: Callable[[str], Sequence[str]] = lambda _: (),
    reads: dict[str, list[Any]] | None = None,
) -> None:
    """arq's ``start_jobs`` for ``job_ids``, each job taken by one ``arq_claim.lua`` call.

    arq takes a job with WATCH, EXISTS, ZSCORE, MULTI, PSETEX and EXEC: four round trips and
    six commands per job taken (a job deferred for its limiter slot is taken twice or more),
    four of each for one it cannot take. The script checks and sets the same in-progress key
    atomically, in one round trip and four commands (three for a job it cannot take). A
    failed call gives the slot back before its error goes on (a WATCH broken by an outage
    used to leave it counted).

    ``read_keys(job_id)``: keys the job's run reads first, read by the same call; their
    values are left in ``reads[job_id]`` while the job's task runs (its run takes them from
    there, saving a round trip of its own).
    """
    claim = scripts.named("arq_claim")
    ttl_ms = int(worker.in_progress_timeout_s * 1000)
    starts = isinstance(worker, ClaimedStarts) and not worker.allow_abort_jobs
    for raw in job_ids:
        await worker.sem.acquire()
        # Stopping (the flag flipped while this waited for a slot): take nothing more, so
        # that what the stop waits for is only what already runs.
        if worker.job_counter >= worker.max_jobs or not worker.allow_pick_jobs:
            worker.sem.release()
            return
        worker.job_counter += 1
        job_id = raw.decode()
        keys = [IN_PROGRESS_PREFIX + job_id, worker.queue_name]
        args: list[str | int] = [job_id, arq.utils.timestamp_ms(), ttl_ms, secrets.token_hex(8)]
        if starts:
            keys += [JOB_PREFIX + job_id, RETRY_PREFIX + job_id]
            args.append(RETRY_TTL_S)
        if reads is not None:
            keys += read_keys(job_id)
        try:
            taken = await claim.run(worker.pool, keys, args)
        except BaseException:
            worker._release_sem_dec_counter_on_complete()
            raise
        if taken is None:  # running elsewhere, finished, or deferred meanwhile
            worker._release_sem_dec_counter_on_complete()
            continue
        score, *values = taken
        context = contextvars.copy_context()
        if starts:
            job, job_try, *values = values
            context.run(_CLAIMED_START.set, _ClaimedStart(job_id, job, int(job_try)))
        if reads is not None:
            reads[job_id] = values
        run = worker.run_job(job_id, int(float(score)))
        task = worker.loop.create_task(run, context=context)
        task.add_done_callback(functools.partial(_ended, worker, reads, job_id))
        worker.tasks[job_id] = task


def _ended(
    worker: arq.worker.Worker, reads: dict[str, list[Any]] | None, job_id: str, _: object
) -> None:
    """A taken job's task is done: its slot back, and its claim's reads dropped (a run arq
    ended before the job's function took them: an expired job, say)."""
    if reads is not None:
        reads.pop(job_id, None)
    worker._release_sem_dec_counter_on_complete()


# --- 11. run_job's start, read by the claim --------------------------------------------------
#: The TTL arq's run_job gives a job's try count (``EXPIRE arq:retry:<id> 88400``).
RETRY_TTL_S: Final = 88_400


@dataclass
class _ClaimedStart:
    """What a job's claim read for its run_job's first transaction: the job, and its try
    (counted by the claim). ``used`` once that transaction has had it."""

    job_id: str
    job: bytes | None
    job_try: int
    used: bool = False

    def answers(self, calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> bool:
        """Whether ``calls`` are the transaction the claim made in its place."""
        return calls == [
            ("get", (JOB_PREFIX + self.job_id,), {}),
            ("incr", (RETRY_PREFIX + self.job_id,), {}),
            ("expire", (RETRY_PREFIX + self.job_id, RETRY_TTL_S), {}),
        ]


#: Set in the context of each task start_claimed creates for a ClaimedStarts worker.
_CLAIMED_START: contextvars.ContextVar[_ClaimedStart | None] = contextvars.ContextVar(
    "mimoq_claimed_start", default=None
)


class _StartPipeline:
    """run_job's first pipeline: its commands are recorded; ``execute`` answers them from the
    claim when they are the ones it made, and sends them otherwise (an arq release whose
    start differs, which the contract test would have caught: the try is then counted by
    both, and the job runs)."""

    def __init__(self, real: Any, start: _ClaimedStart, transaction: bool) -> None:
        self._real = real
        self._start = start
        self._transaction = transaction
        self._calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    async def __aenter__(self) -> _StartPipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def __getattr__(self, name: str) -> Callable[..., _StartPipeline]:
        def record(*args: Any, **kwargs: Any) -> _StartPipeline:
            self._calls.append((name, args, kwargs))
            return self

        return record

    async def execute(self) -> list[Any]:
        if self._start.answers(self._calls):
            return [self._start.job, self._start.job_try, True]
        async with self._real.pipeline(transaction=self._transaction) as pipe:
            for name, args, kwargs in self._calls:
                getattr(pipe, name)(*args, **kwargs)
            return cast(list[Any], await pipe.execute())


class _RunPool:
    """The worker's pool as a claimed job's run_job sees it: its first pipeline is the
    claim's answer; everything else is the pool itself."""

    def __init__(self, real: Any, start: _ClaimedStart) -> None:
        self._real = real
        self._start = start

    def pipeline(self, transaction: bool = True) -> Any:
        if self._start.used:
            return self._real.pipeline(transaction=transaction)
        self._start.used = True
        return _StartPipeline(self._real, self._start, transaction)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class ClaimedStarts:
    """An arq ``Worker`` whose jobs' runs start from what their claim read (item 11): mixed
    in before ``Worker``, it gives a claimed job's run_job a pool whose first transaction
    is already answered."""

    @property
    def pool(self) -> arq.connections.ArqRedis:
        real = cast(Any, self)._pool
        start = _CLAIMED_START.get()
        if start is None or start.used:
            return cast(arq.connections.ArqRedis, real)
        return cast(arq.connections.ArqRedis, _RunPool(real, start))


# --- 9. a retry whose queue place is already set ------------------------------------------
def retry_where_queued() -> arq.worker.Retry:
    """The ``Retry`` that runs the job again at the score it has in the queue now, which
    its task has set itself (the limiter puts a deferred job at its slot: a relative move
    would add to a score the slot's own moves had already changed)."""
    return arq.worker.Retry()


async def finish_in_pipeline(
    worker: arq.worker.Worker,
    job_id: str,
    *,
    finish: bool,
    result_data: bytes | None,
    result_timeout_s: float | None,
    keep_result_forever: bool,
    incr_score: int | None,
    keep_in_progress: float | None,
) -> bool:
    """arq's ``finish_job``, its commands in one round trip without MULTI/EXEC (two commands
    of every run's five or three; a deferral's end is then one ``DEL``). Each is idempotent
    (``SET``, ``ZREM``, ``DEL``, ``PEXPIRE``), so a pipeline sent again after a lost reply
    does no harm, and a reader between two of them sees nothing it could misread: the job
    has left the queue, or not yet. False, and nothing sent, for a run that moves its score
    (``Retry(defer=…)``'s relative ``ZINCRBY``, which must not run twice): arq's own then."""
    if incr_score:
        return False
    in_progress = IN_PROGRESS_PREFIX + job_id
    async with worker.pool.pipeline(transaction=False) as pipe:
        delete = [in_progress] if keep_in_progress is None else []
        if keep_in_progress is not None:
            pipe.pexpire(in_progress, arq.utils.to_ms(keep_in_progress))
        if finish:
            if result_data:
                expire = None if keep_result_forever else result_timeout_s
                pipe.set(RESULT_PREFIX + job_id, result_data, px=arq.utils.to_ms(expire))
            delete += [RETRY_PREFIX + job_id, JOB_PREFIX + job_id]
            # arq reads its abort set only when aborts are allowed (mimoq's cancel is its
            # own): one command less per job where nothing could have put the job there
            if worker.allow_abort_jobs:
                pipe.zrem(arq.constants.abort_jobs_ss, job_id)
            pipe.zrem(worker.queue_name, job_id)
        if delete:
            pipe.delete(*delete)
        await pipe.execute()
    return True


# --- 10. tries made outside arq ----------------------------------------------------------
def count_tries(pipe: Pipeline, job_id: str, *, tries: int, ttl_ms: int) -> None:
    """Queue on ``pipe`` what makes arq's next run of ``job_id`` its try ``tries + 1``."""
    pipe.set(RETRY_PREFIX + job_id, tries, px=ttl_ms)


# --- 5. overridden worker methods ----------------------------------------------------------
OVERRIDDEN_WORKER_METHODS: Final = (
    "main",
    "heart_beat",
    "close",
    "finish_failed_job",
    "finish_job",
    "start_jobs",
)

# --- 6. start-up INFO ------------------------------------------------------------------------
_LogRedisInfo = Callable[[Any, Callable[[str], Any]], Awaitable[None]]
_original_log_redis_info: _LogRedisInfo = arq.connections.log_redis_info


async def _tolerant_log_redis_info(redis: Any, log_func: Callable[[str], Any]) -> None:
    try:
        await _original_log_redis_info(redis, log_func)
    except ResponseError:
        log_func("redis: embedded in-process stand-in (no INFO)")


def tolerate_missing_info() -> None:
    """Let an arq worker start on a Redis without ``INFO`` (idempotent; real Redis unchanged)."""
    arq.worker.log_redis_info = _tolerant_log_redis_info  # type: ignore[attr-defined]
