"""The fleet-wide MiMo quota limiter: one atomic Redis script per decision, shared by every worker.

Each account+model has an even-spacing schedule (GCRA: the next free slot ``tat`` moves
by one slot per call, a slot being the longer of the call's request and token costs at the
target rate). A call whose slot is now is granted; otherwise its job gets a *ticket* — the
slot reserved under its job id — and ``CapacityDeferred`` says when to come back, so the
worker defers instead of sleeping and an old job never queues behind newer ones.

Only the *admitted* look-ahead of bulk jobs holds tickets: bulk jobs wait outside arq's
queue (``mimoq:wait:*``, written by enqueue.lua) and every grant admits the next one, round
robin over tenants, so a backlog of any size costs O(1) Redis work per granted call.
Interactive jobs go straight to the queue (up to 16 of a tenant's; a flood waits in the
tenant's own list and each of its grants admits the next) and take the earliest bulk
ticket's slot (that bulk job moves to the end) while the bulk lane keeps its minimum
share. Within a lane,
tenants take turns: a tenant holding fewer tickets takes every other slot from one holding
more. A job holding a slot comes back ``hold_s`` early and waits the rest in-process, so
arq's poll delay does not make it miss the slot.

Grants are paced over the *actual* grant times too (never two within a quarter slot, never
above the paced rate over any run): a holder back late is re-spaced to the schedule's end
instead of going back to back with the others. A hard guard over the actual grant times
(never more than the quota in any window of ``window + margin`` seconds, the margin
following the fleet's measured grant-to-send lag) backs the schedule up. A 429 pauses the
model fleet-wide and steps the paced rate down: by ``first_decrease`` (x0.9, regained
within a window) after a clean history, by ``decrease`` (x0.7, additive recovery) when
429s repeat. docs/scheduling.md draws the whole model.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Final, Protocol

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from mimoq.core import scripts, wire
from mimoq.core.dialect import usage_tokens
from mimoq.core.errors import CapacityDeferred, JobCancelled
from mimoq.core.scripts import LibraryFunction
from mimoq.core.settings import Settings
from mimoq.worker.limiter.config import LimiterConfig, admission_keys, limiter_keys
from mimoq.worker.limiter.releases import ReleaseBatcher

log = structlog.get_logger("mimoq.limiter")

#: Audio length charged for a token-limited call whose duration is unknown: over-charging
#: idles some quota until ``release`` credits it back, under-charging risks a 429.
UNKNOWN_AUDIO_S: Final = 60.0
#: Limiter keys outlive their last use by this long (the calibration is worth keeping).
KEY_TTL_S: Final = 7 * 86_400
#: An admitted bulk job that has not asked for a slot within this many windows (it failed
#: first, or its worker died before its first acquire) stops holding a look-ahead place.
ADMIT_TTL_WINDOWS: Final = 2.0
#: Seconds between a worker's admission rounds (admission.py); the work per round is
#: O(models).
ADMIT_INTERVAL_S: Final = 1.0
#: Tenants shown per model by ``snapshot`` (and labelled in metrics); the rest are pooled.
MAX_TENANTS_SHOWN: Final = 20
#: Jobs admitted per model and round when limits are off (nothing to pace them to).
UNLIMITED_ADMIT_BATCH: Final = 500
#: Hex digits of a lease id: longer than Redis's default ``zset-max-listpack-value`` (64),
#: so the sets and hashes keyed by lease (the grant log, the interactive log, the leases in
#: flight, the tokens charged) are created as a skiplist and a hash table, never a listpack.
#: A listpack keeps each score as text and parses every one it passes: the hard guard's
#: count and each grant's insert into a log of about a window of grants (100 at MiMo's real
#: quota) parsed that many 17-digit floats (bench/grant_replay.py: a grant 0.82-0.94x the
#: server's time at 80 digits against 32, issue #22). A server configured with a larger
#: ``zset-max-listpack-value`` keeps listpacks: the same decisions, slower.
LEASE_ID_HEX: Final = 80
#: In-process waits of one ``acquire`` at most: a slot that moved while its job waited
#: (an interactive job took it) is not chased further; the job is deferred instead.
MAX_HOLDS: Final = 3


#: When the running job's place in arq's queue came due (arq's score, in seconds), set by
#: the runner for a job whose cancel marker says it holds a ticket. Such a job's place is
#: always ``hold_s`` before the time it is to ask, even when that is already past
#: (limiter_common.lua queue_score, limiter_acquire.lua requeue), so its first ``acquire``
#: waits until then before it asks: the ask is then its grant, where an ask on arrival
#: only learned to wait (about 7 commands, once per bulk job: issue #22). A place set
#: otherwise (a dead worker's job put back) costs at most ``hold_s`` once. Read once.
QUEUED_TICKET: ContextVar[float | None] = ContextVar("mimoq_queued_ticket", default=None)


class Decision(StrEnum):
    """What the limiter decided for one ``acquire``."""

    GRANTED = "granted"
    TICKET = "ticket"  # queued: a slot is reserved for the job, come back at its time
    COOLDOWN = "cooldown"  # the model is paused after a 429
    GUARD = "guard"  # the hard per-window cap is reached; re-spaced to the schedule's end
    PACED = "paced"  # a grant happened less than a quarter slot ago; re-spaced to the end
    SHARE = "share"  # interactive over its share while bulk waits, not queued: ask again
    PARKED = "parked"  # the same, queued, its tenant holding a ticket: back to its list
    IN_FLIGHT = "in_flight"  # the cap on calls in flight is reached
    CANCELLED = "cancelled"  # the job was cancelled (docs/cancel.md): no call, ever


#: The decisions after which the job holds a reserved slot (a ticket). Such a job is told
#: to come back ``hold_s`` before its slot and waits the rest in the worker: arq returns a
#: deferred job up to a poll late (more on a busy host), and a holder back late by most of
#: a slot loses it. ``share`` and ``in_flight`` hold no slot: the job just asks again.
HOLDS_SLOT: Final = frozenset({Decision.TICKET, Decision.COOLDOWN, Decision.GUARD, Decision.PACED})


@dataclass(frozen=True)
class Lease:
    """One granted MiMo call; hand it back to ``release``. Opaque to the worker."""

    model: str
    lease_id: str
    tokens: int  # tokens charged up front (0 for models without a token limit)
    audio_s: float | None
    granted_at: float  # Redis TIME (or the injected clock), seconds
    #: seconds ``acquire`` waited in-process for the slot (not grant-to-send lag)
    held_s: float = 0.0


class Limiter(Protocol):
    """The contract the worker codes against (see the module docstring)."""

    async def acquire(
        self,
        model: str,
        *,
        job_id: str,
        audio_s: float | None = None,
        lane: str = "interactive",
        tenant: str | None = None,
    ) -> Lease:
        """Reserve capacity for one call right now, or raise ``CapacityDeferred``."""
        ...

    async def release(
        self,
        lease: Lease,
        *,
        usage: Mapping[str, Any] | None,
        latency_s: float | None,
        lag_s: float | None = None,
    ) -> None:
        """After the call ended (success or not): free the lease, settle tokens, record
        latency and the grant-to-send lag."""
        ...

    async def flush_releases(self) -> None:
        """Send the releases still queued (``LimiterConfig.release_linger_s``) now; a worker
        shutting down calls it."""
        ...

    async def admit(self, model: str) -> int:
        """Admit waiting bulk jobs of ``model`` into the queue; returns how many."""
        ...

    async def rate_limited(self, model: str, retry_after_s: float | None) -> None:
        """After a 429 from MiMo: fleet-wide pause of ``model`` and a rate step-down."""
        ...

    async def release_tenant(self, model: str, tenant: str | None) -> int:
        """Give back every ticket ``tenant`` holds for ``model`` (it is held at its limit:
        its slots go to the others); returns how many."""
        ...

    async def release_ticket(self, model: str, job_id: str) -> bool:
        """Give back the ticket ``job_id`` holds for ``model`` without a call (a long job's
        parent: its chunks make the calls); its slot goes to the schedule's last ticket.
        Returns whether it held one."""
        ...

    def queue_next_free(self, pipe: Pipeline, model: str, *, load: bool = False) -> int:
        """Queue on ``pipe`` a read (it reserves nothing) of the seconds until this limiter
        could grant one more call of ``model``; returns how many commands it queued, the
        last one's reply being the seconds as text (0 commands: always free now). ``load``
        first loads the script again (after NOSCRIPT: Redis restarted or was flushed)."""
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
    lag_ewma_s: float | None = None
    guard_margin_s: float = 0.0
    #: a call's tokens besides its audio's: fitted once the calls' lengths vary (the
    #: configured 21 until then); with ``tokens_per_audio_s``, the token estimate of a call
    tokens_per_call: float | None = None
    #: how late ticket holders ask for their slots (EWMA; None: none measured yet): the
    #: pace tolerates it up to 50 ms where it is longer than 3/4 of a slot (docs/scheduling.md)
    holder_late_s: float | None = None
    #: tickets held per lane, bulk jobs admitted ahead and waiting per tenant, grants per
    #: lane and tenant since the keys were created, interactive grants in the last window
    lanes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The limiter's decisions, each ``core/scripts/limiter_<decision>.lua``, run as functions of
#: one Redis function library with the functions they share, ``limiter_common.lua`` (the
#: registry's ``in_library``).
DECISION_SCRIPTS: Final = (
    "acquire", "release", "rate_limited", "release_tenant", "release_ticket", "admit", "snapshot",
    "next_free",
)  # fmt: skip


def _limiter_script(decision: str) -> LibraryFunction:
    return scripts.in_library(f"limiter_{decision}")


def new_lease_id() -> str:
    """A fresh lease id, ``LEASE_ID_HEX`` hex digits."""
    return secrets.token_hex(LEASE_ID_HEX // 2)


def _seconds(wait: float) -> float:
    # Round up to arq's millisecond resolution: a job back early is deferred once more.
    return max(0.001, math.ceil(wait * 1000) / 1000)


def _pairs(raw: list[Any]) -> dict[str, int]:
    """A Lua flat field/number list as a dict."""
    text = [x.decode() if isinstance(x, bytes) else str(x) for x in raw]
    return {text[i]: int(text[i + 1]) for i in range(0, len(text) - 1, 2)}


def _lanes(raw_grants: list[Any], raw_waiting: list[Any], raw_held: list[Any]) -> dict[str, Any]:
    """Grants per lane and tenant, waiting depth per tenant and tickets held per lane and
    tenant, from the snapshot's lists."""
    counts = _pairs(raw_grants)
    held: dict[str, dict[str, int]] = {}
    for name, n in _pairs(raw_held).items():
        lane, _, tenant = name.partition(":")
        held.setdefault(lane, {})[tenant] = n
    grants: dict[str, int] = {}
    tenant_grants: dict[str, int] = {}
    for name, n in counts.items():
        kind, _, rest = name.partition(":")
        if kind == "g":  # one count per lane and tenant: "g:<lane>:<tenant>"
            lane, _, tenant = rest.partition(":")
            grants[lane] = grants.get(lane, 0) + n
            tenant_grants[tenant] = tenant_grants.get(tenant, 0) + n
        elif kind == "lane":  # written before the per-lane-and-tenant count (issue #22)
            grants[rest] = grants.get(rest, 0) + n
        elif kind == "tenant":
            tenant_grants[rest] = tenant_grants.get(rest, 0) + n
    return {
        "grants": grants,
        "tenant_grants": tenant_grants,
        "admitted_total": counts.get("admitted", 0),
        # due holders the pace or the guard held back (re-spaced): ~0 when jitter is small
        "respaced": {
            k.removeprefix("respaced:"): v for k, v in counts.items() if k.startswith("respaced:")
        },
        "waiting": _pairs(raw_waiting),
        # tickets held per lane and tenant ("_": no tenant)
        "tenant_tickets": held,
        # new tickets that took a slot of a tenant holding more (tenants' turns)
        "turns": counts.get("turns", 0),
        # interactive jobs over the lane's share put back in their tenant's waiting list
        "parked": counts.get("parked", 0),
        # bulk slots an interactive job gave to another tenant's ticket waiting after it
        "yielded": counts.get("yielded", 0),
    }


class RedisLimiter:
    """The ``Limiter`` of a fleet: all state in Redis, decided by Lua scripts on Redis TIME.

    ``clock`` (tests only) replaces Redis TIME with the given seconds, so scheduling
    decisions can be tabled against an injected time without sleeping; ``sleep`` (tests
    only) is how ``acquire`` waits for a slot less than ``hold_s`` away.
    """

    def __init__(
        self,
        config: LimiterConfig,
        redis: Redis,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config
        self.redis = redis
        self._clock = clock
        # An injected clock without an injected sleep never waits in-process: real time
        # would not move that clock.
        self._sleep = sleep or (asyncio.sleep if clock is None else None)
        # Releases wait for their batch only on real time, and never under an in-flight cap
        # (a late release would hold a grant back): releases.py says what else is late.
        self._releases: ReleaseBatcher | None = None
        if config.release_linger_s > 0 and clock is None and config.max_in_flight is None:
            self._releases = ReleaseBatcher(self._send_releases, linger_s=config.release_linger_s)

    def _config(self, model: str) -> dict[str, Any]:
        """The one JSON argument every script reads its configuration from (``Q`` in Lua)."""
        c, quota = self.config, self.config.quota(model)
        out: dict[str, Any] = {
            "model": model,
            "requests": quota.requests,
            "tokens": quota.tokens or 0,
            "window": c.window_s,
            "target": c.target,
            "margin": c.guard_margin_s,
            "margin_cap": c.margin_cap_s,
            "burst": c.burst,
            "max_in_flight": c.max_in_flight or 0,
            "lease_ttl": c.lease_ttl_s,
            "ticket_grace": c.ticket_grace_s,
            "recovery": c.recovery_per_window,
            "first_decrease": c.first_decrease,
            "call_tokens": c.tokens_per_call,
            "tokens_per_s": c.tokens_per_audio_s,
            "key_ttl": KEY_TTL_S,
            "bulk_min_share": c.bulk_min_share,
            "lookahead": c.lookahead_s,
            "admit_slots": c.admit_slots,
            # how early a job holding a slot is due in the queue: it waits the rest in acquire
            "hold": c.hold_s if self._sleep is not None else 0.0,
            "admit_ttl": ADMIT_TTL_WINDOWS * c.window_s,
            "wait_prefix": f"{wire.WAIT_PREFIX}{model}:",
            "interactive_direct": wire.INTERACTIVE_DIRECT,
            # set for this long by a park: a flag gone stale keeps a job in its tenant's
            # list for at most an admission round (or until its tenant's next grant)
            "over_share_key": wire.interactive_over_share_key(model),
            "over_share_ms": math.ceil(min(c.window_s, ADMIT_INTERVAL_S) * 1000),
            "cancel_prefix": wire.CANCEL_PREFIX,
            "max_tenants": MAX_TENANTS_SHOWN,
        }
        if c.tenant_holds:  # tenants held at their limit take no admission turn
            out["held_prefix"] = wire.TENANT_HELD_PREFIX
        if self._clock is not None:
            out["now"] = self._clock()
        return out

    async def _run(
        self,
        script: str,
        model: str,
        call: Mapping[str, Any] | list[Mapping[str, Any]] | None = None,
    ) -> Any:
        keys = limiter_keys(self.config.account, model) + admission_keys(model)
        args = [wire.dumps(self._config(model))]
        if call is not None:
            args.append(wire.dumps(call))
        return await _limiter_script(script).run(self.redis, keys, args)

    async def acquire(
        self,
        model: str,
        *,
        job_id: str,
        audio_s: float | None = None,
        lane: str = "interactive",
        tenant: str | None = None,
    ) -> Lease:
        """Grant a call of ``model`` for ``job_id`` now, or raise ``CapacityDeferred``.

        ``audio_s`` sizes the token estimate of token-limited models (ASR); a job deferred
        with a ticket must come back with the same ``job_id`` to claim its slot. ``lane``
        and ``tenant`` are the job's ``priority`` and ``tenant`` fields.
        """
        lease_id = new_lease_id()
        audio = 0.0
        if self.config.quota(model).tokens is not None:
            audio = UNKNOWN_AUDIO_S if audio_s is None else max(audio_s, 0.0)
        call: dict[str, Any] = {
            "job": job_id, "lease": lease_id, "audio": audio, "measured": audio_s is not None,
            "lane": lane, "tenant": tenant,
        }  # fmt: skip
        hold = self.config.hold_s if self._sleep is not None else 0.0
        held_s = await self._until_queued_slot(hold)
        for held in range(MAX_HOLDS + 1):
            # `last`: a slot within `hold` is not waited for here any more; the script then
            # puts the job's queue place `hold` before it (already past: due at once), and
            # the worker that takes it waits for the slot (QUEUED_TICKET)
            call["last"] = self._sleep is None or held == MAX_HOLDS
            raw = await self._run("acquire", model, call)
            decision = Decision(raw[0].decode() if isinstance(raw[0], bytes) else raw[0])
            wait, tokens, now = float(raw[1]), int(raw[2]), float(raw[3])
            if decision is Decision.CANCELLED:
                raise JobCancelled("the job was cancelled before its MiMo call")
            if decision is Decision.GRANTED:
                return Lease(
                    model=model, lease_id=lease_id, tokens=tokens, audio_s=audio_s,
                    granted_at=now, held_s=held_s,
                )  # fmt: skip
            if (
                self._sleep is None
                or decision not in HOLDS_SLOT
                or wait > hold
                or held == MAX_HOLDS
            ):
                break
            # The slot is this close: wait here, where a timer is ms-accurate, not in arq's
            # queue, which returns the job a poll late (or later on a busy host).
            await self._sleep(wait)
            held_s += wait
        # A queued job's place is set already (limiter_acquire.lua requeue: `hold` before
        # the slot, where its next worker waits out the rest before it asks); `retry` is
        # what a caller outside arq's queue waits, and what the logs and metrics say.
        early = hold if decision in HOLDS_SLOT and wait > hold else 0.0
        retry = _seconds(wait - early)
        raise CapacityDeferred(
            f"no {model} capacity yet ({decision}); retry in {retry:.3f} s",
            retry_after_s=retry,
            queued=int(raw[4]) == 1,
        )

    async def _until_queued_slot(self, hold: float) -> float:
        """Wait until the slot of a job queued ``hold`` before it (``QUEUED_TICKET``);
        returns the seconds waited. A slot that moved meanwhile is found by the ask after."""
        queued = QUEUED_TICKET.get()
        if queued is None:
            return 0.0
        QUEUED_TICKET.set(None)  # the job's first ask only
        now = self._clock() if self._clock is not None else time.time()
        early = queued + hold - now
        if self._sleep is None or not 0 < early <= hold:
            return 0.0
        await self._sleep(early)
        return early

    async def release(
        self,
        lease: Lease,
        *,
        usage: Mapping[str, Any] | None,
        latency_s: float | None,
        lag_s: float | None = None,
    ) -> None:
        """Free ``lease``; settle its tokens with ``usage`` (None keeps the estimate)."""
        actual = usage_tokens(usage) if lease.tokens else None
        audio_s = lease.audio_s
        if audio_s is None and usage and isinstance(usage.get("seconds"), int | float):
            audio_s = float(usage["seconds"])
        call = {
            "lease": lease.lease_id,
            "estimate": lease.tokens,
            "actual": -1 if actual is None else actual,
            "audio": -1 if audio_s is None or audio_s <= 0 else audio_s,
            "latency": -1 if latency_s is None else max(latency_s, 0.0),
            "lag": -1 if lag_s is None else max(lag_s, 0.0),
        }
        if self._releases is not None:
            self._releases.add(lease.model, call)
        else:
            await self._send_releases(lease.model, [call])

    async def _send_releases(self, model: str, calls: list[Mapping[str, Any]]) -> None:
        await self._run("release", model, calls)

    async def flush_releases(self) -> None:
        if self._releases is not None:
            await self._releases.flush()

    async def rate_limited(self, model: str, retry_after_s: float | None) -> None:
        """Pause ``model`` for the whole fleet (Retry-After, else the default cool-down)."""
        pause = -1.0 if retry_after_s is None else max(retry_after_s, 0.0)
        call = {"retry_after": pause, "pause": self.config.cooldown_s,
                "decrease": self.config.decrease}  # fmt: skip
        stepped, remaining = await self._run("rate_limited", model, call)
        log.warning(
            "limiter.rate_limited", model=model, account=self.config.account,
            stepped_down=bool(stepped), paused_s=round(float(remaining), 3),
        )  # fmt: skip

    async def release_tenant(self, model: str, tenant: str | None) -> int:
        """Give back every ticket ``tenant`` holds for ``model``: each freed slot goes to
        the schedule's last ticket (limiter_release_tenant.lua); returns how many were held."""
        return int(await self._run("release_tenant", model, {"tenant": tenant}))

    async def release_ticket(self, model: str, job_id: str) -> bool:
        """Give back ``job_id``'s ticket: its slot goes to the schedule's last ticket
        (limiter_release_ticket.lua)."""
        return int(await self._run("release_ticket", model, {"job": job_id})) == 1

    async def admit(self, model: str, *, untracked: int | None = None) -> int:
        """Top up ``model``'s admitted look-ahead from its waiting bulk jobs.

        ``untracked``: admit up to that many without keeping a look-ahead (limits off).
        """
        want = -untracked if untracked is not None else 0
        return int(await self._run("admit", model, {"want": want}))

    async def snapshot(self, model: str) -> LimiterSnapshot:
        """The current state of ``model``'s limiter."""
        raw = await self._run("snapshot", model)
        _, factor, cooldown, recent, tokens, in_flight, tickets, backlog = raw[:8]
        rate, latency, deviation, n429, lag, margin, bulk_tickets, inter_tickets = raw[8:16]
        admitted, recent_interactive, grants, waiting, held, base, late = raw[16:23]
        c, quota = self.config, self.config.quota(model)
        paced = c.target * float(factor)
        has_latency = float(latency) >= 0
        lanes = _lanes(grants, waiting, held)
        lanes.update(
            tickets={"interactive": int(inter_tickets), "bulk": int(bulk_tickets)},
            admitted=int(admitted),
            recent={"interactive": int(recent_interactive),
                    "bulk": int(recent) - int(recent_interactive)},
        )  # fmt: skip
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
            tokens_per_call=round(float(base), 4) if quota.tokens else None,
            latency_ewma_s=round(float(latency), 4) if has_latency else None,
            latency_deviation_s=round(float(deviation), 4) if has_latency else None,
            rate_limited_total=int(n429),
            lag_ewma_s=round(float(lag), 4) if float(lag) >= 0 else None,
            guard_margin_s=round(float(margin), 4),
            holder_late_s=round(float(late), 4) if float(late) >= 0 else None,
            lanes=lanes,
        )

    def queue_next_free(self, pipe: Pipeline, model: str, *, load: bool = False) -> int:
        """Queue the limiter_next_free.lua read of ``model`` on ``pipe`` (see ``Limiter``).

        Queued as a bare FCALL, the library loaded ahead of it with ``load`` (after "Function
        not found").
        """
        script = _limiter_script("next_free")
        if load:
            script.queue_load(pipe)
        script.queue(pipe, *self._next_free_args(model))
        return 2 if load else 1

    def _next_free_args(self, model: str) -> tuple[list[str], list[str]]:
        # Every call of a multi-account worker reads every account: build the arguments
        # once per model (the configuration is frozen; an injected clock changes them).
        cache: dict[str, tuple[list[str], list[str]]] = self.__dict__.setdefault(
            "_next_free_cache", {}
        )
        found = cache.get(model)
        if found is None or self._clock is not None:
            keys = limiter_keys(self.config.account, model) + admission_keys(model)
            found = cache[model] = (keys, [wire.dumps(self._config(model))])
        return found

    async def next_free_s(self, model: str) -> float:
        """Seconds until this limiter could grant one more call of ``model`` (0: now)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            try:
                self.queue_next_free(pipe, model)
                replies = await pipe.execute()
            except ResponseError as exc:
                if not scripts.not_loaded(exc):
                    raise
                self.queue_next_free(pipe, model, load=True)
                replies = await pipe.execute()
        return float(replies[-1])


#: Limits off, the grant is only this: the job's cancel marker, read and set atomically as
#: the acquire script does (docs/cancel.md), and an interactive job out of its tenant's
#: admitted set.


class UnlimitedLimiter:
    """The ``Limiter`` when limits are disabled: grants everything, remembers nothing.

    Bulk jobs still wait for admission (enqueue.lua cannot know that limits are off): with
    ``admission`` it admits them in large rounds, as fast as the workers ask.
    """

    def __init__(self, admission: RedisLimiter | None = None) -> None:
        self._admission = admission

    async def acquire(
        self,
        model: str,
        *,
        job_id: str,
        audio_s: float | None = None,
        lane: str = "interactive",
        tenant: str | None = None,
    ) -> Lease:
        if self._admission is not None:
            redis = self._admission.redis
            ttl_ms = int(self._admission.config.lease_ttl_s * 1000)
            keys = [wire.cancel_key(job_id)]
            if lane != "bulk":
                keys.append(wire.interactive_admitted_key(model, tenant))
            if not await scripts.named("unlimited_grant").run(redis, keys, [ttl_ms, job_id]):
                raise JobCancelled("the job was cancelled before its MiMo call")
        lease_id = uuid.uuid4().hex  # no log holds it
        return Lease(model=model, lease_id=lease_id, tokens=0, audio_s=audio_s, granted_at=0.0)

    async def release(
        self,
        lease: Lease,
        *,
        usage: Mapping[str, Any] | None,
        latency_s: float | None,
        lag_s: float | None = None,
    ) -> None:
        return None

    async def flush_releases(self) -> None:
        return None

    async def rate_limited(self, model: str, retry_after_s: float | None) -> None:
        return None

    async def release_tenant(self, model: str, tenant: str | None) -> int:
        return 0  # no tickets without limits

    async def release_ticket(self, model: str, job_id: str) -> bool:
        return False  # no tickets without limits

    async def admit(self, model: str) -> int:
        if self._admission is None:
            return 0
        return await self._admission.admit(model, untracked=UNLIMITED_ADMIT_BATCH)

    def queue_next_free(self, pipe: Pipeline, model: str, *, load: bool = False) -> int:
        return 0  # no limit: every account is free now


def build_limiter(
    settings: Settings, redis: Redis, *, config: LimiterConfig | None = None
) -> Limiter:
    """The limiter the settings ask for (``MIMOQ_LIMITS_ENABLED``), on the fleet's Redis;
    ``config`` (default: from the settings) is one account's of several."""
    config = config or LimiterConfig.from_settings(settings)
    if not settings.limiter.enabled:
        return UnlimitedLimiter(RedisLimiter(config, redis))
    return RedisLimiter(config, redis)
