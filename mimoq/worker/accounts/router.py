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
import re
import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
from redis.asyncio import Redis

from mimoq.core.errors import RateLimitedError
from mimoq.core.keypool import PoolAccount
from mimoq.core.settings import Settings
from mimoq.worker import metrics
from mimoq.worker.limiter import Limiter, build_limiter
from mimoq.worker.mimo_client import MimoClient

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

    def __init__(self, accounts: Sequence[Account]) -> None:
        if not accounts:
            raise ValueError("a router needs at least one account")
        self.accounts: Mapping[str, Account] = {a.name: a for a in accounts}

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
        the limiter how it went (a 429 pauses that account's model, nobody else's).
        ``lane`` and ``tenant`` are the job's scheduling fields (README, "Scheduling")."""
        account = self.choose(job_id)
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
            raise
        finally:
            latency = time.monotonic() - started
            await account.limiter.release(
                lease, usage=usage or None, latency_s=latency, lag_s=lag_s
            )


def build_router(
    settings: Settings, redis: Redis, http: httpx.AsyncClient, pool: Sequence[PoolAccount]
) -> AccountRouter:
    """One ``Account`` per pool account, each with a limiter keyed by its name."""
    accounts = []
    for spec in pool:
        limiter = build_limiter(settings.model_copy(update={"limit_account": spec.name}), redis)
        clients = [
            MimoClient(http, base_url=k.base_url or settings.base_url(), api_key=k.secret or None)
            for k in spec.keys
        ]
        accounts.append(Account(name=spec.name, limiter=limiter, clients=clients))
    return AccountRouter(accounts)
