"""Retry delays: capped exponential with equal jitter; Retry-After wins."""

from __future__ import annotations

import pytest

from mimoq.worker.backoff import MAX_HONOURED_RETRY_AFTER_S, backoff_s


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [
        (1, 0.0, 0.5),
        (1, 1.0, 1.0),
        (2, 0.0, 1.0),
        (3, 0.5, 3.0),
        (5, 1.0, 16.0),
        (10, 0.0, 30.0),
        (50, 1.0, 60.0),
        (0, 0.0, 0.5),
    ],
)
def test_exponential_capped(attempt: int, rand: float, expected: float) -> None:
    assert backoff_s(attempt, base_s=1.0, max_s=60.0, rand=lambda: rand) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("retry_after", "rand", "expected"),
    [(7.0, 0.0, 7.0), (7.0, 1.0, 7.7), (0.0, 0.5, 0.0), (1e9, 0.0, MAX_HONOURED_RETRY_AFTER_S)],
)
def test_retry_after_wins(retry_after: float, rand: float, expected: float) -> None:
    assert backoff_s(
        9, base_s=1.0, max_s=60.0, retry_after_s=retry_after, rand=lambda: rand
    ) == pytest.approx(expected)
