"""A fleet on an injected clock: the queue, admission and limiter scripts as workers use them.

Jobs are enqueued with the real enqueue.lua and picked from arq's real queue in score
order, as arq picks them; a deferral puts a job back at ``now + retry`` (arq's defer). Only
time is simulated: the limiter scripts read the injected clock, and the loop jumps to the
next due job instead of sleeping, so minutes of scheduling run in a second.
"""

from __future__ import annotations

import heapq
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.core.errors import CapacityDeferred
from mimoq.worker.limiter import LimiterConfig, RedisLimiter


@dataclass(frozen=True)
class Grant:
    at: float
    job_id: str
    model: str
    lane: str
    tenant: str | None


@dataclass(order=True)
class _Arrival:
    at: float
    job_id: str = field(compare=False)
    job: dict[str, object] = field(compare=False)


class _Held(Exception):
    """The limiter waits in-process for a slot ``wait`` seconds away (``hold_s``)."""

    def __init__(self, wait: float) -> None:
        self.wait = wait


async def _hold(wait: float) -> None:
    # Modelled as the job coming back exactly on time (a timer, not arq's poll), while the
    # fleet's other due jobs go on: the sim runs one decision at a time.
    raise _Held(wait)


class Fleet:
    """Infinitely many workers sharing one limiter (concurrency is not what is tested here)."""

    def __init__(
        self,
        redis: ArqRedis,
        config: LimiterConfig,
        *,
        late_s: Callable[[int], float] = lambda n: 0.0,
    ) -> None:
        self.redis = redis
        # ahead of Redis TIME, so jobs enqueued (scored on Redis TIME) are due at once
        self.now = time.time() + 1.0
        self.start = self.now
        self.limiter = RedisLimiter(config, redis, clock=lambda: self.now, sleep=_hold)
        self.enqueue_script = redis.register_script(wire.enqueue_script())
        self.grants: list[Grant] = []
        self.deferrals = 0
        self.holds = 0
        self._late_s = late_s
        self._arrivals: list[_Arrival] = []

    async def enqueue(self, job_id: str, job: dict[str, object]) -> None:
        """A producer enqueueing now (a raw EVALSHA of enqueue.lua, as any language would)."""
        created = await self.enqueue_script(
            keys=wire.enqueue_keys(job_id), args=[job_id, json.dumps(job), 0]
        )
        assert created == 1
        if await self.redis.zscore(wire.QUEUE_NAME, job_id) is not None:
            # scored on Redis TIME; on the injected clock it is enqueued now
            await self.redis.zadd(wire.QUEUE_NAME, {job_id: self.now * 1000})

    async def enqueue_many(self, jobs: list[tuple[str, dict[str, object]]]) -> None:
        """A backlog enqueued at once, pipelined (the same script, one round trip per 1,000)."""
        sha = await self.redis.script_load(wire.enqueue_script())
        for i in range(0, len(jobs), 1000):
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id, job in jobs[i : i + 1000]:
                    pipe.evalsha(sha, 4, *wire.enqueue_keys(job_id), job_id, json.dumps(job), 0)
                await pipe.execute()

    def arrive(self, at: float, job_id: str, job: dict[str, object]) -> None:
        """Enqueue ``job`` when the clock reaches ``at``."""
        heapq.heappush(self._arrivals, _Arrival(at, job_id, job))

    async def step(self) -> Grant | None:
        """Run the next due job once (arrivals first); None when it was deferred."""
        head = await self.redis.zrange(wire.QUEUE_NAME, 0, 0, withscores=True)
        due = head[0][1] / 1000 if head else float("inf")
        if self._arrivals and self._arrivals[0].at <= due:
            arrival = heapq.heappop(self._arrivals)
            self.now = max(self.now, arrival.at)
            await self.enqueue(arrival.job_id, arrival.job)
            return None
        assert head, "nothing queued and nothing arriving"
        raw_id, score = head[0]
        job_id = raw_id.decode()
        self.now = max(self.now, score / 1000)
        await self.redis.zrem(wire.QUEUE_NAME, job_id)
        job = json.loads(await self.redis.get(wire.job_key(job_id)))["k"]["job"]
        model = str(job.get("model") or "mimo-v2.5-tts")
        lane, tenant = str(job.get("priority") or "interactive"), job.get("tenant")
        try:
            lease = await self.limiter.acquire(model, job_id=job_id, lane=lane, tenant=tenant)
        except _Held as held:
            self.holds += 1
            await self.redis.zadd(wire.QUEUE_NAME, {job_id: (self.now + held.wait) * 1000})
            return None
        except CapacityDeferred as exc:
            assert exc.retry_after_s is not None
            self.deferrals += 1
            back = self.now + exc.retry_after_s + self._late_s(self.deferrals)
            await self.redis.zadd(wire.QUEUE_NAME, {job_id: back * 1000})
            return None
        grant = Grant(self.now, job_id, model, lane, tenant)
        self.grants.append(grant)
        await self.limiter.release(lease, usage=None, latency_s=0.6, lag_s=0.01)
        await self.redis.delete(wire.job_key(job_id))
        return grant

    async def run_until(self, done: Callable[[], bool], *, max_steps: int = 100_000) -> None:
        for _ in range(max_steps):
            if done():
                return
            await self.step()
        raise AssertionError(f"not done after {max_steps} steps ({len(self.grants)} grants)")

    async def run_for(self, seconds: float, *, max_steps: int = 200_000) -> None:
        """Process every job due within the next ``seconds`` of the injected clock."""
        until = self.now + seconds
        # bounded, so a livelock (a job answered "wait 0" forever) fails instead of hanging
        for _ in range(max_steps):
            head = await self.redis.zrange(wire.QUEUE_NAME, 0, 0, withscores=True)
            next_at = min(
                head[0][1] / 1000 if head else float("inf"),
                self._arrivals[0].at if self._arrivals else float("inf"),
            )
            if next_at > until:
                self.now = until
                return
            await self.step()
        raise AssertionError(f"{seconds} s not run after {max_steps} steps at {self.now}")


def bulk(tenant: str | None = None, model: str = "mimo-v2.5-tts") -> dict[str, object]:
    job: dict[str, object] = {"kind": "speech", "input": "hi", "priority": "bulk", "model": model}
    if tenant is not None:
        job["tenant"] = tenant
    return job


def interactive(tenant: str | None = None, model: str = "mimo-v2.5-tts") -> dict[str, object]:
    job: dict[str, object] = {"kind": "speech", "input": "hi", "model": model}
    if tenant is not None:
        job["tenant"] = tenant
    return job


def max_in_any_window(times: list[float], window_s: float) -> int:
    """The most grants inside any half-open window [t, t + window_s)."""
    order, best, lo = sorted(times), 0, 0
    for hi in range(len(order)):
        while order[hi] - order[lo] >= window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best
