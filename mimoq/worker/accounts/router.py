"""Sends each MiMo call through an account and reports its outcome to that account.

Each account has its own limiter (its own quota in Redis), its own breaker state and its
own HTTP clients, one per key, used in turn. With several accounts, ``routing`` picks the
account (the one that can serve soonest, kept for the job and its fan-out while it holds
a ticket there); a pool of one account is never routed, and costs nothing extra.

The router records what happens (limiter release, 429s, breaker trips and resumes,
metrics) and re-raises a call's error unchanged; when the account is paused it attaches
what it learned (``error.account_pause``), and ``worker.decide`` alone says what follows.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import structlog
from redis.asyncio import Redis

from mimoq.core.errors import AccountPause, AccountPaused, MimoqError, RateLimitedError
from mimoq.core.keypool import PoolAccount
from mimoq.core.scripts.replies import GateVerdict
from mimoq.core.settings import Settings
from mimoq.worker import metrics
from mimoq.worker.accounts.breaker import Breaker, account_error, trips
from mimoq.worker.accounts.route_choice import Routes
from mimoq.worker.call_latency import CALL_LATENCIES
from mimoq.worker.limiter import Limiter, LimiterConfig, build_limiter
from mimoq.worker.mimo_client import MimoClient

log = structlog.get_logger("mimoq.accounts")


@dataclass
class Account:
    """One account: its name (never a key), its limiter and one MiMo client per key."""

    name: str
    limiter: Limiter
    clients: Sequence[MimoClient]
    _turn: itertools.cycle[MimoClient] = field(init=False, repr=False)
    #: This worker saw a 429 since its last success here (a success then resets the run).
    saw_429: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self._turn = itertools.cycle(self.clients)

    def client(self) -> MimoClient:
        """The next of the account's keys (they share its quota: any of them will do)."""
        return next(self._turn)


@dataclass(frozen=True)
class Call:
    """What a routed call uses: the client to send through, and the account to record."""

    client: MimoClient
    account: str


class AccountRouter:
    """Routes each MiMo call to an account and reports its outcome to that account's limiter."""

    def __init__(
        self,
        accounts: Sequence[Account],
        breaker: Breaker | None = None,
        *,
        redis: Redis | None = None,
        route_ttl_s: float = 600.0,
    ) -> None:
        """``redis`` (required with more than one account) holds the routes."""
        if not accounts:
            raise ValueError("a router needs at least one account")
        self.accounts: Mapping[str, Account] = {a.name: a for a in accounts}
        self.breaker = breaker
        self.routes: Routes | None = None
        if len(accounts) > 1:
            if redis is None:
                raise ValueError("routing over several accounts needs Redis")
            self.routes = Routes(
                redis,
                {a.name: a.limiter for a in accounts},
                ttl_s=route_ttl_s,
                read_paused=breaker is not None,
                paused=breaker.paused_view if breaker is not None else None,
            )

    async def flush_releases(self) -> None:
        """Send every account's queued lease releases now (the worker is stopping)."""
        for account in self.accounts.values():
            await account.limiter.flush_releases()

    @property
    def primary(self) -> Account:
        """The first configured account (start-up checks look at its limiter)."""
        return next(iter(self.accounts.values()))

    async def refresh_gauges(self) -> None:
        """Set ``mimoq_account_paused`` from Redis (at each heartbeat, calls or not); the
        breaker's copy of the paused set is checked against Redis by the same read."""
        if self.breaker is not None:
            metrics.accounts_paused(self.accounts, await self.breaker.paused_view.refresh())

    async def watch_paused(self) -> None:
        """Keep the breaker's copy of the paused set (paused_view.py; until cancelled)."""
        if self.breaker is not None:
            await self.breaker.paused_view.watch()

    async def _route(self, job_id: str, model: str) -> tuple[Account, frozenset[str]]:
        """The account for this call (see ``routing``) and the paused accounts."""
        if self.routes is None:  # one account: nothing to choose
            paused = await self.breaker.paused() if self.breaker is not None else frozenset()
            return self.primary, paused
        routed = await self.routes.route(job_id, model)
        return self.accounts[routed.account], routed.paused

    async def _admit(self, job_id: str, model: str) -> tuple[Account, bool]:
        """The account for this call and whether the call is its breaker's probe; raises
        ``AccountPaused`` when the account is paused and this call is not its probe."""
        account, paused = await self._route(job_id, model)
        if self.breaker is None:
            return account, False
        metrics.accounts_paused(self.accounts, paused)
        if account.name not in paused:
            return account, False
        gate = await self.breaker.gate(account.name)
        if gate.verdict is GateVerdict.PROBE:
            log.info("account.probe", account=account.name, next_probe_in_s=gate.seconds)
            return account, True
        if gate.verdict is GateVerdict.EXPIRED:
            raise AccountPaused(await self._expired(account.name))
        if gate.verdict is GateVerdict.PAUSED:
            raise AccountPaused(self._paused_for(account.name, gate.seconds))
        return account, False  # resumed between the two reads

    def _paused_for(self, account: str, until_probe_s: float) -> AccountPause:
        # Look again at the next probe, but no later than one base interval: a probe that
        # succeeds resumes the account, and waiting jobs should notice soon. Jitter keeps
        # a large backlog from coming back in one instant.
        assert self.breaker is not None
        base = self.breaker.probe_base_s
        wait = min(max(until_probe_s, 0.0), base) + random.uniform(0, base / 4)
        return AccountPause(account, retry_after_s=max(wait, 0.001))

    async def _expired(self, account: str) -> AccountPause:
        # The pause is past its maximum: the account's error, as its pause record has it.
        assert self.breaker is not None
        return AccountPause(
            account, expired=account_error(await self.breaker.state(account), account)
        )

    async def _tripped(self, account: str, error: MimoqError, probing: bool) -> AccountPause:
        """Record an account error (401/402/403) on the breaker: what the job's call learned."""
        assert self.breaker is not None
        if await self.breaker.trip(account, error):
            self._paused(account, error)
        elif probing and await self.breaker.expired(account):
            # The probe failed and the pause is past its maximum (probes go on, so the
            # account can still come back).
            return await self._expired(account)
        return self._paused_for(account, self.breaker.probe_base_s)

    @asynccontextmanager
    async def call(
        self,
        model: str,
        *,
        job_id: str,
        audio_s: float | None,
        usage: dict[str, Any],
        lane: str = "interactive",
        tenant: str | None = None,
    ) -> AsyncIterator[Call]:
        """Reserve the chosen account's capacity for one call, time and count it, and tell
        the limiter and the breaker how it went (a 429 pauses that account's model; an
        account error, or 429s past the breaker's limit, pause the account). The call's
        error is re-raised as it came, with ``account_pause`` set when the account is
        paused. ``lane`` and ``tenant`` are the job's scheduling fields (docs/scheduling.md)."""
        account, probing = await self._admit(job_id, model)
        asked = time.monotonic()
        lease = await account.limiter.acquire(
            model, job_id=job_id, audio_s=audio_s, lane=lane, tenant=tenant
        )
        metrics.limiter_grant(model, lane, tenant)
        started = time.monotonic()
        # The grant-to-send lag the hard guard's margin follows: from asking (the grant is
        # inside that round trip) to the call starting, so a loaded event loop is counted;
        # the time acquire waited for its slot in-process is not lag.
        lag_s = max(started - asked - lease.held_s, 0.0)
        try:
            with metrics.mimo_call(model, usage):
                yield Call(client=account.client(), account=account.name)
        except RateLimitedError as exc:
            await account.limiter.rate_limited(model, exc.retry_after_s)
            if self.breaker is not None:
                account.saw_429 = True
                if await self.breaker.rate_limited(account.name, exc):
                    self._paused(account.name, exc)
                    exc.account_pause = self._paused_for(account.name, self.breaker.probe_base_s)
            raise
        except MimoqError as exc:
            if self.breaker is not None and trips(exc):
                exc.account_pause = await self._tripped(account.name, exc, probing)
            raise
        else:
            if self.breaker is not None and probing and await self.breaker.resume(account.name):
                log.warning("account.resumed", account=account.name)
            elif self.breaker is not None and account.saw_429:
                account.saw_429 = False
                await self.breaker.succeeded(account.name)
        finally:
            latency = time.monotonic() - started
            CALL_LATENCIES.record(account.name, model, latency)
            await account.limiter.release(
                lease, usage=usage or None, latency_s=latency, lag_s=lag_s
            )

    def _paused(self, account: str, error: MimoqError) -> None:
        # Written once per pause, by the worker whose call opened the breaker.
        metrics.accounts_paused([account], {account})
        log.error(
            "account.paused",
            account=account,
            error_type=error.error_type,
            status=error.status,
            reason=error.message,
            probe_every_s=self.breaker.probe_base_s if self.breaker else None,
        )


def build_router(
    settings: Settings,
    redis: Redis,
    http: httpx.AsyncClient,
    pool: Sequence[PoolAccount],
    *,
    breaker: bool = True,
) -> AccountRouter:
    """One ``Account`` per pool account, each with a limiter keyed by its name; with
    ``breaker``, account errors pause the account instead of failing the job."""
    accounts = []
    for spec in pool:
        # The bulk look-ahead is shared by every account of a model (admission is per model),
        # so each account keeps the accounts' combined rate's worth admitted.
        config = LimiterConfig.from_settings(settings)
        limiter = build_limiter(
            settings,
            redis,
            config=replace(
                config,
                account=spec.name,
                lookahead_s=config.lookahead_s * len(pool),
                admit_slots=len(pool) == 1,
            ),
        )
        clients = [
            MimoClient(http, base_url=k.base_url or settings.base_url(), api_key=k.secret or None)
            for k in spec.keys
        ]
        accounts.append(Account(name=spec.name, limiter=limiter, clients=clients))
    # A route must lead a job back to its ticket for as long as the ticket can be claimed.
    route_ttl_s = LimiterConfig.ticket_grace_s + settings.limiter.window_s
    if not breaker:
        return AccountRouter(accounts, redis=redis, route_ttl_s=route_ttl_s)
    return AccountRouter(
        accounts,
        Breaker(
            redis,
            probe_base_s=settings.accounts.probe_base_s,
            probe_max_s=settings.accounts.probe_max_s,
            pause_max_s=settings.accounts.pause_max_s,
            trip_429s=settings.accounts.trip_429s,
        ),
        redis=redis,
        route_ttl_s=route_ttl_s,
    )
