"""The quota bench's arithmetic: lognormal moments, Little's-law sizing, windows, shares."""

from __future__ import annotations

import random
import statistics

import pytest

from tests.support.bench_scripts import load_bench

qm = load_bench("_quota_measure")


@pytest.mark.parametrize(("median_s", "sigma"), [(1.0, 0.3), (1.0, 0.6), (8.0, 1.0)])
def test_lognormal_mean_and_mean_deviation_match_samples(median_s: float, sigma: float) -> None:
    rng = random.Random(5)
    samples = [rng.lognormvariate(0, sigma) * median_s for _ in range(200_000)]
    mean = statistics.fmean(samples)
    mad = statistics.fmean(abs(x - mean) for x in samples)
    assert qm.lognormal_latency_s(median_s, sigma) == pytest.approx((mean, mad), rel=0.02)


@pytest.mark.parametrize(
    ("rate", "mean_s", "dev_s", "workers", "expected"),
    [
        (9.8, 1.197, 0.565, 1, 23),  # 9.8/s x 2.33 s = 22.8 slots
        (9.8, 1.197, 0.565, 4, 6),  # 23 split over 4 workers, rounded up
        (5.5, 1.197, 0.565, 4, 4),  # 12.8 -> 13 -> 4 each
        (0.01, 1.0, 0.0, 4, 1),  # never zero
    ],
)
def test_concurrency_per_worker(
    rate: float, mean_s: float, dev_s: float, workers: int, expected: int
) -> None:
    assert qm.concurrency_per_worker(rate, mean_s, dev_s, workers) == expected


@pytest.mark.parametrize(
    ("finished", "expected_jobs", "expected_tokens"),
    [
        ([], [0, 0, 0], [0, 0, 0]),
        # windows are [t0 + (k-1)W, t0 + kW): a finish on a boundary opens the next one
        ([(100.0, True, 5), (109.99, True, 5), (110.0, True, 7)], [2, 1, 0], [10, 7, 0]),
        ([(125.0, False, 9), (125.0, True, 1)], [0, 0, 1], [0, 0, 1]),  # failures don't count
        ([(99.9, True, 1), (130.0, True, 1)], [0, 0, 0], [0, 0, 0]),  # outside the run
    ],
)
def test_per_window(
    finished: list[tuple[float, bool, int]], expected_jobs: list[int], expected_tokens: list[int]
) -> None:
    records = [qm.Finished(at, ok, tokens) for at, ok, tokens in finished]
    assert qm.per_window(records, t0=100.0, window_s=10.0, windows=3) == (
        expected_jobs,
        expected_tokens,
    )


def _row(**changes: object) -> object:
    fields: dict[str, object] = dict(
        name="x", workers=4, concurrency=6, limits=True, jobs=[50, 98, 96], tokens=[0, 0, 0],
        quota_requests=100, quota_tokens=None, admitted_steady=196, rejected_steady=0,
        rejected_total=0, gave_up=0,
    )  # fmt: skip
    fields.update(changes)
    return qm.Row(**fields)


@pytest.mark.parametrize(
    ("changes", "share", "per_success"),
    [
        ({}, 0.97, 0.0),  # window 1 (the ramp-up) is left out: (98 + 96) / 200
        ({"rejected_steady": 388}, 0.97, 2.0),
        ({"quota_tokens": 1000, "tokens": [10, 980, 990]}, 0.985, 0.0),  # tokens bind
        ({"jobs": [0, 0, 0], "rejected_steady": 5}, 0.0, 5.0),  # no division by zero
    ],
)
def test_row_share_and_429s_per_success(
    changes: dict[str, object], share: float, per_success: float
) -> None:
    row = _row(**changes)
    assert row.share == pytest.approx(share)  # type: ignore[attr-defined]
    assert row.per_success == pytest.approx(per_success)  # type: ignore[attr-defined]


def test_table_aligns_columns() -> None:
    text = qm.table([["a", "bbb"], ["cccc", "d"]])
    assert text.splitlines() == ["a     bbb", "cccc  d"]
