"""Which account serves a call: the one that can serve it soonest, kept while the job needs it.

The choice is made per *affinity* — a job's id, or a fan-out chunk's parent id
(``<parent>.p000`` → ``<parent>``) — and recorded in Redis (``mimoq:route:<affinity>``,
with a TTL refreshed on each use). A job that comes back for the limiter ticket it holds
therefore returns to the account that holds the ticket, and every chunk of a fan-out goes
through one account. A route is re-chosen only when it has none or its account is paused
(and some other account is not).

A new route goes to the account whose limiter could grant the call soonest (its
``next_free`` read: the end of its reserved schedule, its 429 cool-down, its in-flight
cap), so the accounts' schedules stay level however the jobs arrive; equal accounts are
told apart by rendezvous hashing of the affinity, which is stable and spreads the ties of
workers choosing at the same instant.

Cost per call with several accounts: one pipelined round trip (the route, one read per
account: O(accounts), and the paused set unless this process holds a copy of it:
paused_view.py), plus one compare-and-set when a route is new or re-chosen. A pool of one
account does none of this.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from mimoq.core import scripts, wire
from mimoq.worker.accounts.breaker import PAUSED_SET
from mimoq.worker.accounts.paused_view import PausedView
from mimoq.worker.limiter import Limiter

_CHUNK_SUFFIX: Final = re.compile(r"\.p\d{3,}$")
#: Next-free times closer than this are a tie (arq defers in milliseconds: no difference).
TIE_S: Final = 0.001


def affinity(job_id: str) -> str:
    """The id a job is routed by: a chunk job's parent, else the job itself."""
    return _CHUNK_SUFFIX.sub("", job_id)


def _rendezvous(key: str, account: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{key}\x00{account}".encode()).digest()[:8], "big")


def soonest(accounts: Sequence[str], next_free_s: Mapping[str, float], key: str) -> str:
    """The account that could serve soonest; among ties (within ``TIE_S``) the highest
    rendezvous score of ``key``. An account missing from ``next_free_s`` is free now."""
    if not accounts:
        raise ValueError("no account to choose from")

    def rank(account: str) -> tuple[int, int]:
        wait = max(next_free_s.get(account, 0.0), 0.0)
        return math.floor(wait / TIE_S), -_rendezvous(key, account)

    return min(accounts, key=rank)


@dataclass(frozen=True)
class Route:
    """A routing decision: the account, and whether it is a new route to record."""

    account: str
    new: bool


def choose_route(
    accounts: Sequence[str],
    *,
    key: str,
    route: str | None,
    paused: Collection[str],
    next_free_s: Mapping[str, float],
) -> Route:
    """Keep ``route`` while its account is configured and not paused (or every account is:
    the job stays where its ticket is); otherwise the soonest of the unpaused accounts (of
    all of them when all are paused: somebody must hold the job, and its breaker decides)."""
    if (
        route is not None
        and route in accounts
        and (route not in paused or all(a in paused for a in accounts))
    ):
        return Route(route, new=False)
    candidates = [a for a in accounts if a not in paused] or list(accounts)
    return Route(soonest(candidates, next_free_s, key), new=True)


@dataclass(frozen=True)
class Routed:
    """Where a call goes, and the paused accounts read on the way (for the breaker)."""

    account: str
    paused: frozenset[str]


class Routes:
    """The Redis side of routing: reads, decides with ``choose_route``, records new routes."""

    def __init__(
        self,
        redis: Redis,
        limiters: Mapping[str, Limiter],
        *,
        ttl_s: float,
        read_paused: bool = True,
        paused: PausedView | None = None,
    ) -> None:
        """``read_paused``: whether any account can be paused (there is a breaker);
        ``paused``: the breaker's copy of them, when it keeps one."""
        self._redis = redis
        self._limiters = limiters
        self._names = list(limiters)
        # a route outlives any ticket it leads back to (tickets lapse after their grace)
        self._ttl = max(1, math.ceil(ttl_s))
        self._read_paused = read_paused
        self._paused = paused

    async def route(self, job_id: str, model: str) -> Routed:
        """The account for ``job_id``'s next call of ``model``."""
        group = affinity(job_id)
        key = wire.route_key(group)
        known = self._paused.known() if self._paused is not None else None
        if not self._read_paused:
            known = frozenset()
        replies, slots = await self._read(key, model, read_paused=known is None)
        paused = frozenset(_text(m) for m in replies[0]) if known is None else known
        at = 1 if known is None else 0
        current = None if replies[at] is None else _text(replies[at])
        next_free: dict[str, float] = {}
        for name, (first, count) in zip(self._names, slots, strict=True):
            if count:  # the last of an account's replies is its read
                next_free[name] = float(replies[at + 2 + first + count - 1])
        choice = choose_route(
            self._names, key=group, route=current, paused=paused, next_free_s=next_free
        )
        account = choice.account
        if choice.new:
            # recorded unless somebody re-routed since our read: then theirs is followed
            # (two chunks re-choosing at once agree on one)
            account = _text(
                await scripts.named("route_set").run(
                    self._redis, [key], [account, self._ttl, current or ""]
                )
            )
        return Routed(account=account, paused=paused)

    async def _read(
        self, key: str, model: str, *, read_paused: bool
    ) -> tuple[list[Any], list[tuple[int, int]]]:
        """One round trip: the paused set (``read_paused``), the route (its TTL refreshed),
        each account's next free time. After "Function not found" (Redis restarted, or its
        functions flushed) once more, loading them. Also returns where each account's replies
        start after the route's two, and how many."""
        for load in (False, True):
            async with self._redis.pipeline(transaction=False) as pipe:
                if read_paused:
                    pipe.smembers(PAUSED_SET)
                pipe.get(key)
                pipe.expire(key, self._ttl)
                slots, index = [], 0
                for name in self._names:
                    count = self._limiters[name].queue_next_free(pipe, model, load=load)
                    slots.append((index, count))
                    index += count
                try:
                    return list(await pipe.execute()), slots
                except ResponseError as exc:
                    if load or not scripts.not_loaded(exc):
                        raise
        raise AssertionError("unreachable")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
