"""Which account serves a call: a stable choice per job among the accounts that may serve.

Each account has its own limiter (its own quota in Redis) and its own HTTP clients, one per
key, used in turn. A job is routed by rendezvous hashing of its id over the accounts that
are not paused: the same job comes back to the same account — where its limiter ticket
waits — and a fan-out job's chunks (``<parent>.p000``…) hash by the parent's id, so they
stay on one account. When an account pauses, only its jobs move; the others keep theirs.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import structlog
from redis.asyncio import Redis

from mimoq.core.errors import AccountPausedDeferred, MimoqError, RateLimitedError
from mimoq.core.keypool import PoolAccount
from mimoq.core.settings import Settings
from mimoq.worker import metrics
from mimoq.worker.accounts.breaker import Breaker, Verdict, account_error, trips
from mimoq.worker.limiter import Limiter, build_limiter
from mimoq.worker.mimo_client import MimoClient

log = structlog.get_logger("mimoq.accounts")
_CHUNK_SUFFIX: Final = re.compile(r"\.p\d{3,}$")


def affinity(job_id: str) -> str:
    """The id a job is routed by: a chunk job's parent, else the job itself."""
    return _CHUNK_SUFFIX.sub("", job_id)


def _score(key: str, account: str) -> bytes:
    return hashlib.sha256(f"{key}\x00{account}".encode()).digest()


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

    def __init__(self, accounts: Sequence[Account], breaker: Breaker | None = None) -> None:
        if not accounts:
            raise ValueError("a router needs at least one account")
        self.accounts: Mapping[str, Account] = {a.name: a for a in accounts}
        self.breaker = breaker

    @property
    def primary(self) -> Account:
        """The first configured account (start-up checks look at its limiter)."""
        return next(iter(self.accounts.values()))

    def choose(self, job_id: str, *, skip: Collection[str] = ()) -> Account:
        """The account for ``job_id``: the highest rendezvous score among those not skipped
        (all of them, if every account is skipped: somebody must hold the job)."""
        candidates = [a for n, a in self.accounts.items() if n not in skip]
        candidates = candidates or list(self.accounts.values())
        key = affinity(job_id)
        return max(candidates, key=lambda a: _score(key, a.name))

    async def refresh_gauges(self) -> None:
        """Set ``mimoq_account_paused`` from Redis (at each heartbeat, calls or not)."""
        if self.breaker is not None:
            metrics.accounts_paused(self.accounts, await self.breaker.paused())

    async def _admit(self, job_id: str) -> tuple[Account, bool]:
        """The account for this call and whether the call is its breaker's probe; raises
        ``AccountPausedDeferred`` (defer) or the account's error (pause outlived its max)."""
        if self.breaker is None:
            return self.choose(job_id), False
        paused = await self.breaker.paused()
        metrics.accounts_paused(self.accounts, paused)
        account = self.choose(job_id, skip=paused)
        if account.name not in paused:
            return account, False
        gate = await self.breaker.gate(account.name)
        if gate.verdict is Verdict.PROBE:
            log.info("account.probe", account=account.name, next_probe_in_s=gate.seconds)
            return account, True
        if gate.verdict is Verdict.EXPIRED:
            raise account_error(await self.breaker.state(account.name), account.name)
        if gate.verdict is Verdict.PAUSED:
            raise self._deferral(account.name, gate.seconds)
        return account, False  # resumed between the two reads

    def _deferral(self, account: str, until_probe_s: float) -> AccountPausedDeferred:
        # Come back at the next probe, but no later than one base interval: a probe that
        # succeeds resumes the account, and waiting jobs should notice soon. Jitter keeps
        # a large backlog from coming back in one instant.
        assert self.breaker is not None
        base = self.breaker.probe_base_s
        wait = min(max(until_probe_s, 0.0), base) + random.uniform(0, base / 4)
        return AccountPausedDeferred(
            f"account {account} is paused; checking again in {wait:.3f} s",
            retry_after_s=max(wait, 0.001),
        )

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
        account error pauses the account, and the job is deferred instead of failed).
        ``lane`` and ``tenant`` are the job's scheduling fields (README, "Scheduling")."""
        account, probing = await self._admit(job_id)
        asked = time.monotonic()
        lease = await account.limiter.acquire(
            model, job_id=job_id, audio_s=audio_s, lane=lane, tenant=tenant
        )
        metrics.limiter_grant(model, lane, tenant)
        started = time.monotonic()
        # The grant-to-send lag the hard guard's margin follows: from asking (the grant is
        # inside that round trip) to the call starting, so a loaded event loop is counted.
        lag_s = started - asked
        try:
            with metrics.mimo_call(model, usage):
                yield Call(client=account.client(), account=account.name)
        except RateLimitedError as exc:
            await account.limiter.rate_limited(model, exc.retry_after_s)
            if self.breaker is not None:
                account.saw_429 = True
                if await self.breaker.rate_limited(account.name, exc):
                    self._paused(account.name, exc)
                    raise self._deferral(account.name, self.breaker.probe_base_s) from None
            raise
        except MimoqError as exc:
            if self.breaker is None or not trips(exc):
                raise
            if await self.breaker.trip(account.name, exc):
                self._paused(account.name, exc)
            elif probing and await self.breaker.expired(account.name):
                # The probe failed and the pause is past its maximum: this job has waited
                # long enough (probes go on, so the account can still come back).
                raise account_error(await self.breaker.state(account.name), account.name) from None
            raise self._deferral(account.name, self.breaker.probe_base_s) from None
        else:
            if self.breaker is not None and probing and await self.breaker.resume(account.name):
                log.warning("account.resumed", account=account.name)
            elif self.breaker is not None and account.saw_429:
                account.saw_429 = False
                await self.breaker.succeeded(account.name)
        finally:
            latency = time.monotonic() - started
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
        lookahead = settings.limiter.lookahead_s * len(pool)
        limiter = build_limiter(
            settings.updated(limit_account=spec.name, limit_lookahead_s=lookahead), redis
        )
        clients = [
            MimoClient(http, base_url=k.base_url or settings.base_url(), api_key=k.secret or None)
            for k in spec.keys
        ]
        accounts.append(Account(name=spec.name, limiter=limiter, clients=clients))
    if not breaker:
        return AccountRouter(accounts)
    return AccountRouter(
        accounts,
        Breaker(
            redis,
            probe_base_s=settings.accounts.probe_base_s,
            probe_max_s=settings.accounts.probe_max_s,
            pause_max_s=settings.accounts.pause_max_s,
            trip_429s=settings.accounts.trip_429s,
        ),
    )
