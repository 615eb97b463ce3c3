"""The account router records a call's outcome and re-raises its error unchanged.

What it learned about a paused account rides on the error (``account_pause``); the verdict
is ``worker.decide``'s alone (its table tests have the rows).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from arq.connections import ArqRedis

from mimoq.core.errors import (
    AccountPaused,
    InvalidRequestError,
    MimoqError,
    PaymentRequiredError,
    RateLimitedError,
)
from mimoq.worker.accounts.breaker import PAUSED_SET, Breaker
from mimoq.worker.accounts.router import Account, AccountRouter
from mimoq.worker.limiter import Lease
from mimoq.worker.mimo_client import MimoClient

pytestmark = [pytest.mark.redis]
MODEL = "mimo-v2.5-tts"
BASE_S = 0.4


class CountingLimiter:
    """Grants at once; counts releases and 429s (the router must report both)."""

    def __init__(self) -> None:
        self.released = 0
        self.limited: list[float | None] = []

    async def acquire(self, model: str, **_: Any) -> Lease:
        return Lease(model, "lease", 0, None, granted_at=1.0)

    async def release(self, lease: Lease, **_: Any) -> None:
        self.released += 1

    async def admit(self, model: str) -> int:
        return 0

    async def rate_limited(self, model: str, retry_after_s: float | None) -> None:
        self.limited.append(retry_after_s)


async def _raise_through(router: AccountRouter, error: MimoqError) -> MimoqError:
    with pytest.raises(MimoqError) as caught:
        async with router.call(MODEL, job_id="j", audio_s=None, usage={}):
            raise error
    return caught.value


async def _router(redis: ArqRedis, **breaker: float) -> tuple[AccountRouter, CountingLimiter]:
    limiter = CountingLimiter()
    settings: Mapping[str, float] = {
        "probe_base_s": BASE_S, "probe_max_s": 10.0, "pause_max_s": 60.0, "trip_429s": 2,
        **breaker,
    }  # fmt: skip
    # The client is never used: each test's body raises what a call would have.
    client = MimoClient(None, base_url="http://127.0.0.1:9/v1", api_key=None)  # type: ignore[arg-type]
    account = Account(name="acct", limiter=limiter, clients=[client])  # type: ignore[arg-type]
    return AccountRouter([account], Breaker(redis, **settings)), limiter  # type: ignore[arg-type]


async def test_an_account_error_is_re_raised_as_it_came_with_the_pause_on_it(
    redis: ArqRedis,
) -> None:
    router, limiter = await _router(redis)
    no_funds = PaymentRequiredError("MiMo answered HTTP 402: no balance", status=402)
    raised = await _raise_through(router, no_funds)
    assert raised is no_funds  # not converted: same object, same type, same message
    assert raised.account_pause is not None and raised.account_pause.account == "acct"
    assert raised.account_pause.expired is None
    assert 0 < raised.account_pause.retry_after_s <= BASE_S * 1.25
    assert await redis.sismember(PAUSED_SET, "acct")  # type: ignore[misc]  # tripped
    assert limiter.released == 1


async def test_a_request_error_passes_through_untouched(redis: ArqRedis) -> None:
    router, _ = await _router(redis)
    bad = InvalidRequestError("voice is not a preset", param="voice", status=400)
    raised = await _raise_through(router, bad)
    assert raised is bad and raised.account_pause is None
    assert not await redis.sismember(PAUSED_SET, "acct")  # type: ignore[misc]


async def test_a_429_is_recorded_and_only_the_one_that_trips_carries_a_pause(
    redis: ArqRedis,
) -> None:
    router, limiter = await _router(redis)
    first = await _raise_through(router, RateLimitedError("429", status=429, retry_after_s=3.0))
    assert isinstance(first, RateLimitedError) and first.account_pause is None
    second = await _raise_through(router, RateLimitedError("429", status=429))
    assert isinstance(second, RateLimitedError)  # still the 429, now with the pause
    assert second.account_pause is not None and second.account_pause.expired is None
    assert limiter.limited == [3.0, None]


async def test_a_call_to_a_paused_account_is_not_made(redis: ArqRedis) -> None:
    router, limiter = await _router(redis)
    await _raise_through(router, PaymentRequiredError("no balance", status=402))
    with pytest.raises(AccountPaused) as caught:
        async with router.call(MODEL, job_id="k", audio_s=None, usage={}):
            pytest.fail("a paused account's call went out")
    pause = caught.value.account_pause
    assert pause is not None and pause.expired is None
    assert 0 < pause.retry_after_s <= BASE_S * 1.25
    assert limiter.released == 1  # the refused call reserved nothing


async def test_past_its_maximum_the_pause_carries_the_accounts_error(redis: ArqRedis) -> None:
    router, _ = await _router(redis, pause_max_s=0.0)
    await _raise_through(router, PaymentRequiredError("no balance", status=402))
    with pytest.raises(AccountPaused) as caught:
        async with router.call(MODEL, job_id="k", audio_s=None, usage={}):
            pytest.fail("a paused account's call went out")
    pause = caught.value.account_pause
    assert pause is not None and isinstance(pause.expired, PaymentRequiredError)
    assert "acct has been paused since" in pause.expired.message
    assert "no balance" in pause.expired.message
