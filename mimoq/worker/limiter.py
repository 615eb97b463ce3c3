"""The fleet-wide MiMo quota limiter: one atomic Redis script per decision, shared by every worker.

Each account+model has an even-spacing schedule (GCRA: the next free slot ``tat`` moves
by one slot per call, a slot being the longer of the call's request and token costs at the
target rate). A call whose slot is now is granted; otherwise its job gets a *ticket* — the
slot reserved under its job id — and ``CapacityDeferred`` says when to come back, so the
worker defers instead of sleeping and an old job never queues behind newer ones. A slot
more than a window ahead is a place in the queue: its holder comes back half-way there and
reads it again, because the queue is re-spaced whenever the rate it was planned for moves
by more than 5 % (the rate recovering after a 429, the ASR token estimate calibrating). A
hard guard over the actual grant times (never more than the quota in any window of
``window + margin`` seconds) backs the schedule up when returning jobs bunch, and the margin
absorbs the spread between our grant times and MiMo's receive times. A 429 pauses
the model fleet-wide and steps the paced rate down (x0.7 by default), which then recovers
additively.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any, Final, Protocol

import structlog
from redis.asyncio import Redis

from mimoq.core.errors import CapacityDeferred
from mimoq.core.settings import Settings
from mimoq.worker.limiter_config import LimiterConfig, limiter_keys

log = structlog.get_logger("mimoq.limiter")

#: Audio length charged for a token-limited call whose duration is unknown: over-charging
#: idles some quota until ``release`` credits it back, under-charging risks a 429.
UNKNOWN_AUDIO_S: Final = 60.0
#: Limiter keys outlive their last use by this long (the calibration is worth keeping).
KEY_TTL_S: Final = 7 * 86_400


class Decision(StrEnum):
    """What the limiter decided for one ``acquire``."""

    GRANTED = "granted"
    TICKET = "ticket"  # queued: a slot is reserved for the job, come back at its time
    COOLDOWN = "cooldown"  # the model is paused after a 429
    GUARD = "guard"  # the hard per-window cap is reached; come back when a grant ages out
    IN_FLIGHT = "in_flight"  # the cap on calls in flight is reached


@dataclass(frozen=True)
class Lease:
    """One granted MiMo call; hand it back to ``release``. Opaque to the worker."""

    model: str
    lease_id: str
    tokens: int  # tokens charged up front (0 for models without a token limit)
    audio_s: float | None
    granted_at: float  # Redis TIME, seconds


class Limiter(Protocol):
    """The contract the worker codes against (see the module docstring)."""

    async def acquire(self, model: str, *, job_id: str, audio_s: float | None = None) -> Lease:
        """Reserve capacity for one call right now, or raise ``CapacityDeferred``."""
        ...

    async def release(
        self, lease: Lease, *, usage: Mapping[str, Any] | None, latency_s: float | None
    ) -> None:
        """After the call ended (success or not): free the lease, settle tokens, record latency."""
        ...

    async def rate_limited(self, model: str, retry_after_s: float | None) -> None:
        """After a 429 from MiMo: fleet-wide pause of ``model`` and a rate step-down."""
        ...


@dataclass(frozen=True)
class LimiterSnapshot:
    """One account+model limiter as ``mimoq limits`` shows it; rates are per window."""

    model: str
    window_s: float
    requests_configured: int
    requests_effective: float
    requests_recent: int
    tokens_configured: int | None
    tokens_effective: float | None
    tokens_recent: int
    rate_factor: float
    cooldown_remaining_s: float
    in_flight: int
    max_in_flight: int | None
    tickets: int
    ticket_backlog_s: float
    tokens_per_audio_s: float | None
    latency_ewma_s: float | None
    latency_deviation_s: float | None
    rate_limited_total: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def usage_tokens(usage: Mapping[str, Any] | None) -> int | None:
    """Total tokens of a chat-completions ``usage`` object, or None when it does not say."""
    if not usage:
        return None
    total = usage.get("total_tokens")
    if isinstance(total, int | float) and not isinstance(total, bool) and total >= 0:
        return int(total)
    parts = [usage.get("prompt_tokens"), usage.get("completion_tokens")]
    if all(isinstance(p, int | float) and not isinstance(p, bool) and p >= 0 for p in parts):
        return int(sum(p for p in parts if p is not None))
    return None


@cache
def _script_source(name: str) -> str:
    folder = resources.files("mimoq.worker")
    common = folder.joinpath("limiter_common.lua").read_text(encoding="utf-8")
    return common + "\n" + folder.joinpath(f"limiter_{name}.lua").read_text(encoding="utf-8")


def _seconds(wait: float) -> float:
    # Round up to arq's millisecond resolution: a job back early is deferred once more.
    return max(0.001, math.ceil(wait * 1000) / 1000)


class RedisLimiter:
    """The ``Limiter`` of a fleet: all state in Redis, decided by Lua scripts on Redis TIME."""

    def __init__(self, config: LimiterConfig, redis: Redis) -> None:
        self.config = config
        self._redis = redis
        self._scripts = {
            name: redis.register_script(_script_source(name))
            for name in ("acquire", "release", "rate_limited", "snapshot")
        }

    def _quota_args(self, model: str) -> list[float | int]:
        c, quota = self.config, self.config.quota(model)
        return [
            quota.requests, quota.tokens or 0, c.window_s, c.target, c.guard_margin_s, c.burst,
            c.max_in_flight or 0, c.lease_ttl_s, c.ticket_grace_s, c.recovery_per_window,
            c.tokens_per_call, c.tokens_per_audio_s, KEY_TTL_S,
        ]  # fmt: skip

    async def _run(self, script: str, model: str, *extra: str | float | int) -> Any:
        keys = limiter_keys(self.config.account, model)
        return await self._scripts[script](keys=keys, args=[*self._quota_args(model), *extra])

    async def acquire(self, model: str, *, job_id: str, audio_s: float | None = None) -> Lease:
        """Grant a call of ``model`` for ``job_id`` now, or raise ``CapacityDeferred``.

        ``audio_s`` sizes the token estimate of token-limited models (ASR); a job deferred
        with a ticket must come back with the same ``job_id`` to claim its slot.
        """
        lease_id = uuid.uuid4().hex
        audio = 0.0
        if self.config.quota(model).tokens is not None:
            audio = UNKNOWN_AUDIO_S if audio_s is None else max(audio_s, 0.0)
        raw = await self._run("acquire", model, job_id, lease_id, audio)
        decision = Decision(raw[0].decode() if isinstance(raw[0], bytes) else raw[0])
        wait, tokens, now = float(raw[1]), int(raw[2]), float(raw[3])
        if decision is Decision.GRANTED:
            return Lease(
                model=model, lease_id=lease_id, tokens=tokens, audio_s=audio_s, granted_at=now
            )
        retry = _seconds(wait)
        raise CapacityDeferred(
            f"no {model} capacity yet ({decision}); retry in {retry:.3f} s", retry_after_s=retry
        )

    async def release(
        self, lease: Lease, *, usage: Mapping[str, Any] | None, latency_s: float | None
    ) -> None:
        """Free ``lease``; settle its tokens with ``usage`` (None keeps the estimate)."""
        actual = usage_tokens(usage) if lease.tokens else None
        audio_s = lease.audio_s
        if audio_s is None and usage and isinstance(usage.get("seconds"), int | float):
            audio_s = float(usage["seconds"])
        await self._run(
            "release", lease.model, lease.lease_id, lease.tokens,
            -1 if actual is None else actual,
            -1 if audio_s is None or audio_s <= 0 else audio_s,
            -1 if latency_s is None else max(latency_s, 0.0),
        )  # fmt: skip

    async def rate_limited(self, model: str, retry_after_s: float | None) -> None:
        """Pause ``model`` for the whole fleet (Retry-After, else the default cool-down)."""
        pause = -1.0 if retry_after_s is None else max(retry_after_s, 0.0)
        stepped, remaining = await self._run(
            "rate_limited", model, pause, self.config.cooldown_s, self.config.decrease
        )
        log.warning(
            "limiter.rate_limited", model=model, account=self.config.account,
            stepped_down=bool(stepped), paused_s=round(float(remaining), 3),
        )  # fmt: skip

    async def snapshot(self, model: str) -> LimiterSnapshot:
        """The current state of ``model``'s limiter."""
        raw = await self._run("snapshot", model)
        _, factor, cooldown, recent, tokens, in_flight, tickets, backlog = raw[:8]
        rate, latency, deviation, n429 = raw[8:]
        c, quota = self.config, self.config.quota(model)
        paced = c.target * float(factor)
        has_latency = float(latency) >= 0
        return LimiterSnapshot(
            model=model,
            window_s=c.window_s,
            requests_configured=quota.requests,
            requests_effective=round(quota.requests * paced, 3),
            requests_recent=int(recent),
            tokens_configured=quota.tokens,
            tokens_effective=round(quota.tokens * paced, 3) if quota.tokens else None,
            tokens_recent=int(tokens),
            rate_factor=round(float(factor), 4),
            cooldown_remaining_s=round(float(cooldown), 3),
            in_flight=int(in_flight),
            max_in_flight=c.max_in_flight,
            tickets=int(tickets),
            ticket_backlog_s=round(float(backlog), 3),
            tokens_per_audio_s=round(float(rate), 4) if quota.tokens else None,
            latency_ewma_s=round(float(latency), 4) if has_latency else None,
            latency_deviation_s=round(float(deviation), 4) if has_latency else None,
            rate_limited_total=int(n429),
        )


class UnlimitedLimiter:
    """The ``Limiter`` when limits are disabled: grants everything, remembers nothing."""

    async def acquire(self, model: str, *, job_id: str, audio_s: float | None = None) -> Lease:
        lease_id = uuid.uuid4().hex
        return Lease(model=model, lease_id=lease_id, tokens=0, audio_s=audio_s, granted_at=0.0)

    async def release(
        self, lease: Lease, *, usage: Mapping[str, Any] | None, latency_s: float | None
    ) -> None:
        return None

    async def rate_limited(self, model: str, retry_after_s: float | None) -> None:
        return None


def build_limiter(settings: Settings, redis: Redis) -> Limiter:
    """The limiter the settings ask for (``MIMOQ_LIMITS_ENABLED``), on the fleet's Redis."""
    if not settings.limits_enabled:
        return UnlimitedLimiter()
    return RedisLimiter(LimiterConfig.from_settings(settings), redis)
