"""Riding out Redis outages: redis-py's own retry hook, bounded by time, logged once.

Every command of a client built with :func:`client_options` that fails to reach Redis
(connection refused or reset, a timeout, a server still loading its AOF after a restart) is
retried with capped exponential backoff and jitter until it succeeds or the outage has
lasted ``MIMOQ_REDIS_RETRY_S``; only then does the error reach the caller. So a worker's
polling loop, its heartbeat and a job writing its result all simply wait across a restart
(the job's MiMo call keeps running meanwhile), and ``mimoq batch`` waits instead of dying.
One ``redis.unavailable`` line is logged when an outage starts and one ``redis.restored``
(with its length) when a command succeeds again, however many commands were waiting. A
command whose first failure is followed by a success on a new connection at once met a
connection that died while idle in the pool, not an outage: it logs nothing.

A retried write may run twice if the connection broke after Redis executed it; every
write mimoq makes through such a client is idempotent (SET of a whole record, the enqueue
script's existence checks) or tolerates that (a counter that is one too high).
"""

from __future__ import annotations

import asyncio
import builtins
import contextvars
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import structlog
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import BusyLoadingError, ConnectionError, RedisError, TimeoutError

log = structlog.get_logger("mimoq.redis")

T = TypeVar("T")

#: The errors that mean "Redis is not reachable right now", not "this command is wrong".
RETRY_ON: Final[tuple[type[RedisError], ...]] = (ConnectionError, TimeoutError, BusyLoadingError)
#: redis-py retries the socket connect itself with the same policy, but sees the raw
#: OSError / builtin TimeoutError there (it wraps them only afterwards): retry those too, or
#: a command issued while Redis is down would fail at once instead of waiting.
_RETRY_ON_CONNECT: Final[tuple[type[BaseException], ...]] = (
    *RETRY_ON,
    OSError,
    builtins.TimeoutError,
)
#: The longest wait between two tries: a restarted Redis is used within this of coming back.
BACKOFF_CAP_S: Final = 2.0
_BACKOFF_BASE_S: Final = 0.05


class _Outage:
    """This process's view of Redis: up, or down since when (shared by every client)."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.restored_at = float("-inf")

    def begin(self, error: BaseException, now: float) -> float:
        if self.since is None:
            self.since = now
            log.warning("redis.unavailable", error=type(error).__name__)
        return self.since

    def end(self, now: float) -> None:
        if self.since is not None:
            log.warning("redis.restored", outage_s=round(now - self.since, 3))
            self.since = None
            self.restored_at = now


_OUTAGE = _Outage()
#: How many ``call_with_retry`` calls the current task is inside. redis-py nests them: a
#: command's try reconnects through the connection's own retried connect. Only the outermost
#: success is Redis answering a command again; a connect that succeeds while the restarted
#: server still loads its data (the command then fails with BusyLoadingError) is not, and
#: ending the outage there logged it twice.
_NESTING: contextvars.ContextVar[int] = contextvars.ContextVar(
    "mimoq_redis_retry_nesting", default=0
)


def last_restored_at() -> float:
    """``time.monotonic()`` when Redis last came back in this process (-inf: never lost)."""
    return _OUTAGE.restored_at


class OutageRetry(Retry):
    """redis-py's ``Retry``, bounded by how long the outage has lasted, not a count."""

    __slots__ = ("_limit_s", "_monotonic", "retry_connect")

    def __init__(
        self,
        limit_s: float,
        *,
        retry_connect: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        # retry_connect=False for Sentinel clients: their connect asks the Sentinels for the
        # primary and retries around that; retrying the raw connect would keep dialling the
        # old primary's address for the whole limit.
        errors: tuple[type[BaseException], ...] = _RETRY_ON_CONNECT if retry_connect else RETRY_ON
        super().__init__(
            ExponentialWithJitterBackoff(cap=BACKOFF_CAP_S, base=_BACKOFF_BASE_S),
            retries=-1,
            supported_errors=errors,  # type: ignore[arg-type]  # wider than RedisError on purpose
        )
        self._limit_s = limit_s
        self._monotonic = monotonic
        self.retry_connect = retry_connect

    async def call_with_retry(
        self, do: Callable[[], Awaitable[T]], fail: Callable[[RedisError], Any]
    ) -> T:
        failures = 0
        outermost = _NESTING.get() == 0
        while True:
            nested = _NESTING.set(_NESTING.get() + 1)
            try:
                result = await do()
            except self._supported_errors as error:
                failures += 1
                await fail(error)  # drops the connection: the next try opens a new one
                if failures == 1 and _OUTAGE.since is None:
                    # A pooled connection that died while idle (Redis restarted, a proxy
                    # timed it out) fails once and works on a new one: no outage to report.
                    continue
                since = _OUTAGE.begin(error, self._monotonic())
                if self._monotonic() - since >= self._limit_s:
                    raise
                await asyncio.sleep(self._backoff.compute(failures))
                continue
            finally:
                _NESTING.reset(nested)
            if outermost:
                _OUTAGE.end(self._monotonic())
            return result


def client_options(retry_s: float, *, sentinel: bool = False) -> dict[str, Any]:
    """Keyword arguments for a redis-py client (or arq ``RedisSettings``) that rides out
    outages of up to ``retry_s`` seconds; ``{}`` when ``retry_s`` is 0 (fail at once)."""
    if retry_s <= 0:
        return {}
    _retry_whole_connects()
    retry = OutageRetry(retry_s, retry_connect=not sentinel)
    return {"retry": retry, "retry_on_error": list(RETRY_ON)}


# redis-py retries a connection's socket connect, but not the commands it sends once
# connected (CLIENT SETINFO, AUTH, SELECT: ``on_connect``), and a command takes its
# connection from the pool before its own retry begins. So a Redis that reset a connection
# just after accepting it (a restart under way) failed the command at once, past every
# retry: an arq worker died of it in the middle of a job's start (test_redis_outage). For
# the connections of clients built with ``client_options``, the whole set-up is retried.
_original_connect: Final[Callable[[AbstractConnection], Awaitable[None]]] = (
    AbstractConnection.connect  # redis-py leaves it untyped
)


async def _connect_riding_outages(self: AbstractConnection) -> None:
    retry = self.retry
    if not isinstance(retry, OutageRetry) or not retry.retry_connect:
        # a Sentinel-managed connection asks the Sentinels again itself (see OutageRetry)
        await _original_connect(self)
        return
    # Not the outermost try: the command this connection is for ends an outage, once
    # Redis answers it (a set-up with no command to send proves nothing yet).
    nested = _NESTING.set(_NESTING.get() + 1)
    try:
        await retry.call_with_retry(lambda: _original_connect(self), lambda _: self.disconnect())
    finally:
        _NESTING.reset(nested)


def _retry_whole_connects() -> None:
    AbstractConnection.connect = _connect_riding_outages  # type: ignore[method-assign]
