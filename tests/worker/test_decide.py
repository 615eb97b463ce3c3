"""mimoq.worker.decide: every verdict after one attempt, as a table (no I/O, no clock)."""

from __future__ import annotations

import pytest

from mimoq.core.errors import (
    AccountPause,
    AccountPaused,
    AuthenticationError,
    CapacityDeferred,
    ChunksPending,
    Deferred,
    InternalError,
    InvalidRequestError,
    MimoqError,
    PaymentRequiredError,
    RateLimitedError,
    UpstreamUnavailable,
)
from mimoq.worker.decide import (
    DEFAULT_DEFER_S,
    Defer,
    DeferReason,
    Finish,
    RetryLater,
    RetryPolicy,
    decide_after_attempt,
)

POLICY = RetryPolicy(max_tries=3, backoff_base_s=2.0, backoff_max_s=60.0)


def _half() -> float:
    return 0.5


@pytest.mark.parametrize(
    ("error", "tries", "expected"),
    [
        (None, 1, Finish()),
        (None, 3, Finish()),
        # Deferrals never spend a try, even on what would be the last one.
        (CapacityDeferred("quota", retry_after_s=4.0), 3, Defer(4.0, DeferReason.quota)),
        (ChunksPending("2 of 5 running", retry_after_s=0.5), 1, Defer(0.5, DeferReason.chunks)),
        (Deferred("other"), 2, Defer(DEFAULT_DEFER_S, DeferReason.other)),
        (CapacityDeferred("no time given"), 1, Defer(DEFAULT_DEFER_S, DeferReason.quota)),
    ],
)
def test_verdicts_without_backoff(error: MimoqError | None, tries: int, expected: object) -> None:
    assert decide_after_attempt(error, tries=tries, policy=POLICY, rand=_half) == expected


@pytest.mark.parametrize(
    ("tries", "delay_s"),
    [(1, 1.5), (2, 3.0)],  # equal jitter at rand=0.5: step * 0.75, step = 2, 4
)
def test_retryable_errors_back_off_while_tries_remain(tries: int, delay_s: float) -> None:
    error = UpstreamUnavailable("502", status=502)
    verdict = decide_after_attempt(error, tries=tries, policy=POLICY, rand=_half)
    assert verdict == RetryLater(delay_s=delay_s, error=error)


def test_retry_after_from_the_upstream_wins_over_the_schedule() -> None:
    error = RateLimitedError("429", status=429, retry_after_s=20.0)
    verdict = decide_after_attempt(error, tries=1, policy=POLICY, rand=lambda: 0.0)
    assert verdict == RetryLater(delay_s=20.0, error=error)


def test_the_last_try_of_a_retryable_error_gives_up_and_says_so() -> None:
    verdict = decide_after_attempt(
        UpstreamUnavailable("timeout"), tries=3, policy=POLICY, rand=_half
    )
    assert verdict == Finish(
        error={"type": "upstream_unavailable_error", "message": "gave up after 3 tries: timeout"}
    )
    assert not verdict.succeeded


@pytest.mark.parametrize(
    "error",
    [
        InvalidRequestError("voice is not a preset", param="voice", status=400),
        AuthenticationError("bad key", status=401),
        PaymentRequiredError("no balance", status=402),
        InternalError("internal error in the worker; see its logs"),
    ],
)
def test_permanent_errors_finish_at_once_with_their_own_details(error: MimoqError) -> None:
    verdict = decide_after_attempt(error, tries=1, policy=POLICY, rand=_half)
    assert verdict == Finish(error=error.to_dict())


def test_success_is_a_finish_without_error() -> None:
    assert decide_after_attempt(None, tries=1, policy=POLICY, rand=_half).succeeded  # type: ignore[union-attr]


# What the account router learned (``account_pause``) decides, whatever the error's type.

PAUSE = AccountPause("acct", retry_after_s=0.3)
ACCOUNT_ERROR = PaymentRequiredError("account acct has been paused since …: no balance", status=402)
EXPIRED = AccountPause("acct", expired=ACCOUNT_ERROR)


def _paused(error: MimoqError, pause: AccountPause = PAUSE) -> MimoqError:
    error.account_pause = pause
    return error


@pytest.mark.parametrize(
    "error",
    [
        _paused(PaymentRequiredError("no balance", status=402)),  # permanent alone
        _paused(AuthenticationError("revoked", status=401)),
        _paused(RateLimitedError("429", status=429, retry_after_s=20.0)),  # a retry alone
        AccountPaused(PAUSE),  # no call was made
    ],
)
@pytest.mark.parametrize("tries", [1, 3])  # the last try too: a deferral spends none
def test_a_paused_account_defers_by_the_routers_wait(error: MimoqError, tries: int) -> None:
    verdict = decide_after_attempt(error, tries=tries, policy=POLICY, rand=_half)
    assert verdict == Defer(0.3, DeferReason.account)


@pytest.mark.parametrize(
    "error",
    [_paused(PaymentRequiredError("no balance", status=402), EXPIRED), AccountPaused(EXPIRED)],
)
def test_a_pause_past_its_maximum_fails_with_the_accounts_error(error: MimoqError) -> None:
    verdict = decide_after_attempt(error, tries=1, policy=POLICY, rand=_half)
    assert verdict == Finish(error=ACCOUNT_ERROR.to_dict())
