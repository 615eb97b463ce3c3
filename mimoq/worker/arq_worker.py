"""The arq worker: functions, JSON serialization, dependencies built once per process."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import random
import time
from typing import Any

import httpx
import structlog
from arq.connections import ArqRedis, RedisSettings
from arq.worker import Worker, func
from redis.asyncio import Redis

from mimoq.core import arq_compat, logs, sentinel, usage_journal, wire
from mimoq.core.cancel_script import is_cancelled
from mimoq.core.connections import connect
from mimoq.core.finish import finish
from mimoq.core.jobs import salvage_owner
from mimoq.core.keypool import pool_secrets, usable_pool
from mimoq.core.objstore import open_storage
from mimoq.core.redis_retry import client_options
from mimoq.core.results import read_result
from mimoq.core.settings import Settings
from mimoq.worker import (
    callback_delivery,
    cancel_watch,
    depth,
    metrics,
    result_builder,
    runner,
    tenant_usage,
)
from mimoq.worker.accounts.router import build_router
from mimoq.worker.heartbeat import Heartbeat
from mimoq.worker.limiter.admission import Admitter
from mimoq.worker.limiter.observed_capacity import warn_if_fleet_is_short
from mimoq.worker.metrics_http import MetricsServer
from mimoq.worker.orphans import OrphanWatch
from mimoq.worker.pipeline import WorkerDeps
from mimoq.worker.runner import invalid_job, salvage, salvage_run, speech_task, transcription_task
from mimoq.worker.scaling import sample_desired_workers
from mimoq.worker.usage_folding import UsageFolder

log = structlog.get_logger("mimoq.worker")
#: arq's own try cap. Ours (Settings.max_tries) is enforced in worker.runner, where limiter
#: deferrals are not counted; arq's must only be a backstop far above it.
ARQ_MAX_TRIES = 100_000
#: Due ids checked for a running job by one MGET, just before they are tried.
PICK_CHECK_EVERY = 8


class MimoqWorker(arq_compat.ClaimedStarts, Worker):
    """arq's worker, with failures that arq decides itself turned into mimoq results.

    arq fails a job without calling our code when it expired before a worker got to it or
    ran out of arq-level tries. It would record that only in its own (pickle-shaped) result;
    we record a mimoq failure result and send the failure callback, so nothing vanishes.
    It also beats a heartbeat from arq's polling loop and may serve ``/metrics``.
    """

    def __init__(
        self, *args: Any, mimoq_settings: Settings, metrics_port: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.mimoq_settings = mimoq_settings
        self.heartbeat = Heartbeat(mimoq_settings)
        self.heartbeat.sampler = self.sample_fleet
        self.orphans = OrphanWatch(
            self.heartbeat.worker_id,
            mimoq_settings.ops.heartbeat_interval_s,
            enabled=mimoq_settings.worker.orphan_recovery,
        )
        self.metrics_port = metrics_port
        self.metrics_server: MetricsServer | None = None
        # The first beat is written at start-up, before the first poll takes a job: others
        # judge our in-flight entries by it, so our first poll records its jobs only after
        # a beat. Written by that poll's heart_beat, it (and the fleet's sample read with it)
        # came between taking the first jobs and recording them, and a worker killed in that
        # window left its job to arq's in-progress timeout instead of the orphan sweep (the
        # likely cause of a CI failure of test_inline_callbacks: an inline callback attempt
        # whose worker was killed was not made again within 40 s; no sweep requeued it).
        startup = self.on_startup

        async def beat_after_startup(ctx: dict[Any, Any]) -> None:
            if startup is not None:
                await startup(ctx)
            await self.heartbeat.beat(self.pool, self)

        self.on_startup = beat_after_startup
        self.admitter: Admitter | None = None
        self.usage_folder = UsageFolder(mimoq_settings.ops.heartbeat_interval_s)
        # What each taken job's claim read for its run (runner.FIRST_READS), by job id: its
        # run takes them from the worker's context instead of reading them again.
        self.first_reads: dict[str, list[Any]] = {}
        self.ctx[runner.FIRST_READS] = self.first_reads

    async def main(self) -> None:
        beat = self.heartbeat
        if self.metrics_port is not None and self.metrics_server is None:
            host, port = self.mimoq_settings.ops.metrics_host, self.metrics_port
            self.metrics_server = MetricsServer.start(host, port, liveness=beat.liveness)
            beat.metrics_port = self.metrics_server.port
        log.info("worker.identity", worker_id=beat.worker_id, metrics_port=beat.metrics_port)
        await super().main()

    async def heart_beat(self) -> None:
        await super().heart_beat()
        # Other workers judge our in-flight entries by our heartbeat record, so it must
        # exist before our first entry (else a sweep takes us for dead and re-runs our
        # jobs). After that, jobs just taken are recorded before the beat samples the
        # queue, which would otherwise count them as due (arq leaves them there).
        beat = False
        if not self.heartbeat.recorded:
            beat = await self.heartbeat.beat(self.pool, self)
        await self.orphans.tick(self.pool, self._running_ids())
        beat = await self.heartbeat.beat(self.pool, self) or beat
        await self.usage_folder.tick(self.pool)
        if beat and (deps := self.ctx.get("deps")) is not None:
            # An idle worker must not keep showing a pause that was lifted (or miss a new
            # one): read once a beat. (Every poll read it, 5 times a second a worker, issue #22;
            # changes come by the channel, this read is their backstop.)
            await deps.accounts.refresh_gauges()
        # Waiting bulk jobs are admitted by grants; this round is the safety net (admission.py).
        deps = self.ctx.get("deps")
        if deps is not None and self.allow_pick_jobs:
            settings = self.mimoq_settings
            self.admitter = self.admitter or Admitter(
                deps.limiter,
                gauge_interval_s=settings.ops.heartbeat_interval_s,
                one_per_fleet=settings.limiter.enabled,
            )
            await self.admitter.tick(self.pool)

    async def sample_fleet(self, redis: Redis, now_ms: int) -> None:
        """Each beat's fleet gauges: one reading of the fleet's depth (in flight, the queue,
        the wait lists) serves the queue gauges and the desired workers alike."""
        settings = self.mimoq_settings
        reading = await depth.sample(
            redis, now_ms, dead_letter_ttl_s=settings.callbacks.dead_letter_ttl_s
        )
        if reading is not None:
            await sample_desired_workers(redis, settings, reading)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        # One poll reads up to 5 x max_jobs due ids, which arq starts one by one as slots
        # free. Those already running (here or in another worker: arq leaves them queued)
        # are dropped just before they are tried, by one MGET per few ids, instead of
        # costing a claim each. Each round of free slots is tried in a random order, so that
        # two workers reading the same head of the queue do not walk it in step, each
        # trying what the other has just taken. A job is taken by one script
        # (arq_compat.start_claimed), not arq's WATCH/MULTI round trips.
        rest = job_ids
        while rest and self.allow_pick_jobs:
            free = await arq_compat.free_slots(self)
            batch, rest = rest[:free], rest[free:]
            random.shuffle(batch)
            for at in range(0, len(batch), PICK_CHECK_EVERY):
                part = batch[at : at + PICK_CHECK_EVERY]
                due = await arq_compat.still_due(
                    self.pool, self.queue_name, part, self._running_ids(), time.time() * 1000
                )
                await arq_compat.start_claimed(
                    self, due, read_keys=runner.first_read_keys, reads=self.first_reads
                )

    def _running_ids(self) -> list[str]:
        return [job_id for job_id, task in self.tasks.items() if not task.done()]

    async def close(self) -> None:
        if self._pool is not None:  # jobs still running now are cancelled by arq's close
            await self.orphans.forget_finished(self._pool, self._running_ids())
            await usage_journal.fold_quietly(self._pool)  # an idle fleet leaves no journal
        await self.heartbeat.stop(self._pool)
        await super().close()
        if self.metrics_server is not None:
            self.metrics_server.stop()
            self.metrics_server = None

    async def finish_job(
        self,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
    ) -> None:
        # arq's clean-up without its MULTI/EXEC (a deferral that left its queue place where
        # the limiter put it, most re-runs, ends with one DEL); a relative move is arq's.
        if not await arq_compat.finish_in_pipeline(
            self, job_id, finish=finish, result_data=result_data,
            result_timeout_s=result_timeout_s, keep_result_forever=keep_result_forever,
            incr_score=incr_score, keep_in_progress=keep_in_progress,
        ):  # fmt: skip
            await super().finish_job(
                job_id, finish, result_data, result_timeout_s, keep_result_forever,
                incr_score, keep_in_progress,
            )  # fmt: skip

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        await super().finish_failed_job(job_id, result_data)
        if await read_result(self.pool, job_id) is not None or job_id.startswith("cb-"):
            return
        if is_cancelled(await self.pool.get(wire.cancel_key(job_id))):
            return  # its cancel records it (docs/cancel.md); arq found its job key gone
        reason, raw_job = "the job could not be run", None
        if result_data:
            data = json.loads(result_data)
            error = data.get("r")
            if isinstance(error, dict) and error.get("message"):
                reason = str(error["message"])
            raw_job = (data.get("k") or {}).get("job")
        callback, metadata = salvage(raw_job)
        kind = raw_job.get("kind") if isinstance(raw_job, dict) else None
        tenant, lane = salvage_owner(raw_job)
        result = result_builder.failed(
            job_id,
            error={"type": "job_failed", "message": reason},
            kind=kind if kind in ("speech", "transcription") else None,
            metadata=metadata,
            tenant=tenant,
            priority=lane,
            run=salvage_run(raw_job),
        )
        log.warning("job.failed", job_id=job_id, error_type="job_failed", reason=reason)
        used = tenant_usage.failed_usage(raw_job, None, kind)
        write = tenant_usage.usage_write(used, self.mimoq_settings)
        await finish(self.pool, result, callback, settings=self.mimoq_settings, usage=write)
        metrics.job_outcome(result.kind, None, metrics.JobOutcome.failed)


async def drain_and_close(worker: Worker, *, grace_s: float) -> None:
    """Stop taking jobs, let in-flight ones finish within ``grace_s``, then close.

    Whatever is still running after the grace period is cancelled; arq leaves a cancelled
    job in the queue to be run again, so nothing is lost, only repeated.
    """
    worker.allow_pick_jobs = False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    # Until none runs, not just those running now: a pick already under way when the flag
    # flipped (waiting for a slot or for Redis) still starts its job, whose call is then
    # paid for; closing under it would lose the answer (and repeat the call).
    while running := [t for t in worker.tasks.values() if not t.done()]:
        left = deadline - loop.time()
        if left <= 0:
            break
        await asyncio.wait(running, timeout=left)
    with contextlib.suppress(asyncio.CancelledError):
        await worker.close()


def http_client(settings: Settings) -> httpx.AsyncClient:
    """The one MiMo client of a worker process; its pool is sized to the job concurrency."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            settings.mimo.request_timeout_s, connect=settings.mimo.connect_timeout_s
        ),
        limits=httpx.Limits(
            max_connections=settings.worker.concurrency,
            max_keepalive_connections=settings.worker.concurrency,
        ),
        follow_redirects=False,
    )


async def _startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    http = ctx.get("http") or http_client(settings)
    ctx["http"] = http
    pool = usable_pool(settings)
    ctx["deps"] = WorkerDeps(
        settings=settings,
        storage=open_storage(settings),
        accounts=build_router(
            settings, ctx["redis"], http, pool, breaker=ctx.get("account_breaker", True)
        ),
    )
    await callback_delivery.open_callback_client(ctx)
    ctx["cancel_watch"] = asyncio.create_task(cancel_watch.watch(ctx["redis"], ctx["deps"].running))
    ctx["paused_watch"] = asyncio.create_task(ctx["deps"].accounts.watch_paused())
    log.info(
        "worker.started",
        concurrency=settings.worker.concurrency,
        base_url=settings.base_url(),
        accounts={a.name: len(a.keys) for a in pool},
    )
    await warn_if_fleet_is_short(ctx["deps"].limiter, ctx["redis"], settings)


async def _job_started(ctx: dict[str, Any]) -> None:
    # Runs in arq's own task for the job, before the job's task is created from it: arq's
    # lines about the job and every line inside it carry the job id (worker.runner adds
    # kind, try and model).
    structlog.contextvars.bind_contextvars(job_id=ctx["job_id"])


async def _shutdown(ctx: dict[str, Any]) -> None:
    deps: WorkerDeps | None = ctx.get("deps")
    if deps is not None:
        # the last calls' leases, still waiting for their batch (limiter/releases.py)
        await deps.accounts.flush_releases()
    for name in ("cancel_watch", "paused_watch"):
        watcher = ctx.pop(name, None)
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    await callback_delivery.close_callback_client(ctx)
    if not ctx.get("http_external") and "http" in ctx:
        await ctx["http"].aclose()


def redis_settings_for(settings: Settings) -> RedisSettings:
    """arq's connection settings for ``REDIS_URL``, riding out outages of up to
    ``MIMOQ_REDIS_RETRY_S`` (core/redis_retry.py), at start-up too."""
    assert settings.redis_url is not None
    base = RedisSettings.from_dsn(settings.redis_url)
    options = client_options(settings.worker.redis_retry_s)
    if not options:
        return base
    # arq's start-up loop retries the first connection once a second.
    return dataclasses.replace(
        base,
        conn_retries=max(1, math.ceil(settings.worker.redis_retry_s)),
        conn_retry_delay=1,
        **options,
    )


def build_worker(
    settings: Settings,
    *,
    redis: ArqRedis | None = None,
    burst: bool = False,
    handle_signals: bool = True,
    http: httpx.AsyncClient | None = None,
    metrics_port: int | None = None,
    account_breaker: bool = True,
) -> MimoqWorker:
    """A configured worker; ``redis`` (e.g. the embedded one) overrides ``REDIS_URL``.

    ``account_breaker``: pause an account on 401/402/403 and defer its jobs (a fleet);
    False: such answers fail the job at once (one process, a person waiting for it).

    ``metrics_port``: serve ``/metrics`` and ``/healthz`` there (0: any free port); None:
    not served. With ``handle_signals``, SIGTERM/SIGINT stop job pick-up and give running
    jobs ``settings.worker.shutdown_grace_s`` to finish; arq re-queues any still running after it.
    """
    logs.register_secrets(settings.api_key(), *pool_secrets(settings), *settings.webhook_secrets())
    arq_compat.tolerate_missing_info()
    ctx: dict[str, Any] = {"settings": settings, "account_breaker": account_breaker}
    if http is not None:
        ctx.update(http=http, http_external=True)
    if redis is None and sentinel.is_sentinel_url(settings.redis_url):
        # arq's own Sentinel support drops the retry options: build the client ourselves.
        redis = connect(settings, ride_out_outages=True)
    redis_settings = redis_settings_for(settings) if redis is None and settings.redis_url else None
    return MimoqWorker(
        functions=[
            func(speech_task, name=wire.TASK_SPEECH),
            func(transcription_task, name=wire.TASK_TRANSCRIPTION),
            func(invalid_job, name=wire.TASK_INVALID),
            func(callback_delivery.deliver_callback, name=wire.TASK_CALLBACK),
        ],
        mimoq_settings=settings,
        metrics_port=metrics_port,
        redis_pool=redis,
        redis_settings=redis_settings,
        queue_name=wire.QUEUE_NAME,
        health_check_key=wire.HEALTH_CHECK_KEY,
        job_serializer=wire.serialize,
        job_deserializer=wire.deserialize,
        max_jobs=settings.worker.concurrency,
        # Our own timeout (inside the task) fires first and turns into a retry; arq's
        # would fail the job without a result. arq re-runs a killed worker's job once its
        # in-progress key expires (arq_compat.in_progress_ttl_s): keep the margin small.
        job_timeout=settings.worker.job_timeout_s + 5,
        max_tries=ARQ_MAX_TRIES,
        keep_result=0,  # our result records are the results; arq's would duplicate the job
        poll_delay=settings.worker.poll_delay_s,
        burst=burst,
        handle_signals=handle_signals,
        # arq's waiting signal handler (0 would make it cancel at once, as the grace asks).
        job_completion_wait=settings.worker.shutdown_grace_s,
        ctx=ctx,
        on_startup=_startup,
        on_job_start=_job_started,
        on_shutdown=_shutdown,
    )
