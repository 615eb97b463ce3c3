"""The account circuit breaker: a fleet-wide pause of an account, recorded in Redis.

An answer that says the *account* cannot be served — 401/403 (revoked or forbidden key),
402 (out of funds, or Token Plan's burst throttle), or 429s that go on past
``MIMOQ_ACCOUNT_TRIP_429S`` in a row — trips the breaker. While it is open:

- jobs routed to the account are deferred (not failed, not counted as tries) and routed to
  another account when there is one;
- one request per interval probes the account: the interval starts at
  ``MIMOQ_ACCOUNT_PROBE_BASE_S`` and doubles up to ``MIMOQ_ACCOUNT_PROBE_MAX_S``; exactly one
  worker of the fleet gets each probe (claimed atomically in Redis, on Redis's clock);
- the probe's success closes the breaker for the whole fleet (so does
  ``mimoq accounts resume``);
- after ``MIMOQ_ACCOUNT_PAUSE_MAX_S`` the jobs still waiting fail with the account's error.

Redis (keys spelled in ``mimoq.core.wire``): ``mimoq:account:<name>`` (hash: since, reason,
error_type, status, probe_at, interval, probes), ``mimoq:accounts:paused`` (set of paused
names) and ``mimoq:account:<name>:429s`` (429s in a row, reset by a success).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final

from redis.asyncio import Redis

from mimoq.core import scripts, wire
from mimoq.core.errors import (
    AuthenticationError,
    MimoqError,
    PaymentRequiredError,
    PermanentError,
    RateLimitedError,
)
from mimoq.core.scripts.replies import Gate, decode_gate
from mimoq.worker.accounts.paused_view import PausedView

PAUSED_SET: Final = wire.ACCOUNTS_PAUSED_KEY
#: How long a run of 429s is remembered without another one.
RUN_OF_429S_TTL_S: Final = 3600


@dataclass(frozen=True)
class PausedAccount:
    """A paused account as operators see it (``mimoq health``/``inspect``/``limits``)."""

    account: str
    reason: str
    error_type: str
    status: int | None
    since: float
    paused_s: float
    probes: int
    next_probe_in_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def state_key(account: str) -> str:
    return wire.account_key(account)


def trips(error: MimoqError) -> bool:
    """Whether an error says the account (not the request) cannot be served."""
    return isinstance(error, AuthenticationError | PaymentRequiredError)


def account_error(state: Mapping[str, str], account: str) -> PermanentError:
    """The error a waiting job fails with once the pause outlived its maximum."""
    status = int(state["status"]) if state.get("status", "").isdigit() else None
    message = (
        f"account {account} has been paused since {_iso(float(state.get('since', 0)))}: "
        f"{state.get('reason', 'unknown reason')}"
    )
    kind = state.get("error_type")
    if kind == AuthenticationError.error_type:
        return AuthenticationError(message, status=status)
    if kind == PaymentRequiredError.error_type:
        return PaymentRequiredError(message, status=status)
    return PermanentError(message, status=status)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Breaker:
    """The fleet-wide breakers of every account, on the fleet's Redis."""

    def __init__(
        self,
        redis: Redis,
        *,
        probe_base_s: float,
        probe_max_s: float,
        pause_max_s: float,
        trip_429s: int,
    ) -> None:
        self._redis = redis
        self.probe_base_s = probe_base_s
        self.probe_max_s = max(probe_max_s, probe_base_s)
        self.pause_max_s = pause_max_s
        self.trip_429s = trip_429s
        #: The paused set, kept while this process is subscribed to its changes.
        self.paused_view = PausedView(redis)

    async def paused(self) -> frozenset[str]:
        """Names of the accounts paused now (the router skips them): no round trip while
        ``paused_view`` is subscribed to the set's changes, else one."""
        return await self.paused_view.read()

    async def gate(self, account: str) -> Gate:
        """May a call go through ``account`` now? Claims the probe when one is due."""
        reply = await scripts.named("breaker_gate").run(
            self._redis,
            [state_key(account), PAUSED_SET],
            [self.probe_max_s, self.pause_max_s, account, wire.ACCOUNTS_CHANGED_CHANNEL],
        )
        return decode_gate(reply)

    async def state(self, account: str) -> dict[str, str]:
        """The raw pause record of ``account`` (empty when it is not paused)."""
        raw = await self._redis.hgetall(state_key(account))  # type: ignore[misc]
        return {_text(k): _text(v) for k, v in raw.items()}

    async def expired(self, account: str) -> bool:
        """Whether ``account`` has been paused longer than the maximum (Redis's clock)."""
        since = await self._redis.hget(state_key(account), "since")  # type: ignore[misc]
        if since is None:
            return False
        seconds, micros = await self._redis.time()
        return float(seconds) + float(micros) / 1e6 - float(_text(since)) > self.pause_max_s

    async def trip(self, account: str, error: MimoqError) -> bool:
        """Pause ``account`` fleet-wide; True when this call opened the breaker."""
        opened = await scripts.named("breaker_trip").run(
            self._redis,
            [state_key(account), PAUSED_SET],
            [
                account,
                error.message,
                error.error_type,
                error.status or "",
                self.probe_base_s,
                wire.ACCOUNTS_CHANGED_CHANNEL,
            ],
        )
        return bool(opened)

    async def resume(self, account: str) -> bool:
        """Close the breaker (a probe succeeded, or by hand); True when it was open."""
        was = await scripts.named("breaker_resume").run(
            self._redis,
            [state_key(account), PAUSED_SET, wire.account_429s_key(account)],
            [account, wire.ACCOUNTS_CHANGED_CHANNEL],
        )
        return bool(was)

    async def rate_limited(self, account: str, error: RateLimitedError) -> bool:
        """Count a 429; past ``trip_429s`` in a row, pause the account. True when tripped."""
        run_key = wire.account_429s_key(account)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(run_key)
            pipe.expire(run_key, RUN_OF_429S_TTL_S)
            run, _ = await pipe.execute()
        if int(run) < self.trip_429s:
            return False
        persistent = RateLimitedError(
            f"{run} answers in a row were 429 (rate limited): {error.message}", status=429
        )
        return await self.trip(account, persistent)

    async def succeeded(self, account: str) -> None:
        """A call through ``account`` succeeded: the run of 429s is over."""
        await self._redis.delete(wire.account_429s_key(account))


async def read_paused(redis: Redis) -> list[PausedAccount]:
    """Every paused account with its reason and since-time (for the operator commands)."""
    names = sorted(_text(m) for m in await redis.smembers(PAUSED_SET))  # type: ignore[misc]
    now = time.time()
    out = []
    for name in names:
        raw = await redis.hgetall(state_key(name))  # type: ignore[misc]
        state = {_text(k): _text(v) for k, v in raw.items()}
        try:
            since = float(state["since"])
            probes = int(state.get("probes", "0"))
            probe_at = float(state.get("probe_at", now))
        except (KeyError, ValueError):
            continue  # resumed between the two reads, or not a record of ours
        status = state.get("status", "")
        out.append(
            PausedAccount(
                account=name,
                reason=state.get("reason", ""),
                error_type=state.get("error_type", ""),
                status=int(status) if status.isdigit() else None,
                since=since,
                paused_s=round(max(0.0, now - since), 3),
                probes=probes,
                next_probe_in_s=round(max(0.0, probe_at - now), 3),
            )
        )
    return out


async def resume_by_hand(redis: Redis, account: str) -> bool:
    """``mimoq accounts resume``: close ``account``'s breaker; True when it was paused."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.exists(state_key(account))
        pipe.delete(state_key(account), wire.account_429s_key(account))
        pipe.srem(PAUSED_SET, account)
        pipe.publish(wire.ACCOUNTS_CHANGED_CHANNEL, account)  # workers read the set again
        existed, *_ = await pipe.execute()
    return bool(existed)
