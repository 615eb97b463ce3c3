"""The autoscaling formula (``mimoq_desired_workers``), tabled: pure, no Redis."""

from __future__ import annotations

import math

import pytest

from mimoq.core.dialect_constants import ASR_MODEL, TTS_MODEL
from mimoq.worker.call_latency import CallLatencies, percentile
from mimoq.worker.desired_workers import (
    FleetWork,
    QuotaFeed,
    desired_workers,
    fleet_p90,
)

#: 100 RPM at 98 %: 1.633 grants/s; at a p90 of 9 s that keeps 14.7 calls in flight.
TTS_FEED = QuotaFeed(TTS_MODEL, "acct", grants_per_s=98 / 60, latency_p90_s=9.0)
#: ASR bound by its token quota: 0.5 calls/s of 20 s each keeps 10 in flight.
ASR_FEED = QuotaFeed(ASR_MODEL, "acct", grants_per_s=0.5, latency_p90_s=20.0)


@pytest.mark.parametrize(
    ("by_model", "other", "feeds", "concurrency", "expected"),
    [
        # idle: nothing waits, nothing runs
        ({}, 0, [TTS_FEED], 4, 0),
        ({TTS_MODEL: 0, ASR_MODEL: 0}, 0, [TTS_FEED, ASR_FEED], 4, 0),
        # a deep backlog with the quota binding: the cap, ceil(14.7 / 4) = 4, whatever the depth
        ({TTS_MODEL: 50}, 0, [TTS_FEED], 4, 4),
        ({TTS_MODEL: 5_000}, 0, [TTS_FEED], 4, 4),
        ({TTS_MODEL: 500_000}, 0, [TTS_FEED], 4, 4),
        # little work: the demand, ceil(6 / 4)
        ({TTS_MODEL: 6}, 0, [TTS_FEED], 4, 2),
        # one job still wants a worker (a scale-from-zero must start one)
        ({TTS_MODEL: 1}, 0, [TTS_FEED], 32, 1),
        # two models, both backlogged: the sum of their caps, ceil((14.7 + 10) / 4) = 7
        ({TTS_MODEL: 5_000, ASR_MODEL: 900}, 0, [TTS_FEED, ASR_FEED], 4, 7),
        # one backlogged, the other idle: the idle one's cap adds nothing
        ({TTS_MODEL: 5_000, ASR_MODEL: 0}, 0, [TTS_FEED, ASR_FEED], 4, 4),
        # one backlogged, the other with 2 jobs: 14.7 + 2
        ({TTS_MODEL: 5_000, ASR_MODEL: 2}, 0, [TTS_FEED, ASR_FEED], 4, 5),
        # two accounts of one model: their caps add up, ceil(2 x 14.7 / 4) = 8
        ({TTS_MODEL: 5_000}, 0, [TTS_FEED, QuotaFeed(TTS_MODEL, "b", 98 / 60, 9.0)], 4, 8),
        # jobs of no known model: capped by the largest model's cap while no model has jobs
        ({}, 3, [TTS_FEED], 1, 3),
        ({}, 10_000, [TTS_FEED], 4, 4),
        ({}, 10_000, [TTS_FEED, ASR_FEED], 4, 4),  # not by the idle models' caps summed
        # ... and by the headroom the models with jobs leave: a saturated model stays at its cap
        ({TTS_MODEL: 5_000}, 16, [TTS_FEED, ASR_FEED], 4, 4),
        ({TTS_MODEL: 6}, 100, [TTS_FEED], 4, 4),  # 6 + 8.7 left = the cap, 14.7
        ({TTS_MODEL: 6}, 2, [TTS_FEED], 4, 2),  # 6 + 2
        # limits off: no cap, the demand alone
        ({TTS_MODEL: 100}, 20, None, 10, 12),
        # a faster model needs fewer workers: 1.633/s x 2 s = 3.3 slots
        ({TTS_MODEL: 5_000}, 0, [QuotaFeed(TTS_MODEL, "acct", 98 / 60, 2.0)], 4, 1),
    ],
)
def test_desired_workers(
    by_model: dict[str, int],
    other: int,
    feeds: list[QuotaFeed] | None,
    concurrency: int,
    expected: int,
) -> None:
    result = desired_workers(FleetWork(by_model, other), feeds, concurrency=concurrency)
    assert result.workers == expected


def test_the_cap_is_grant_rate_times_p90_over_concurrency() -> None:
    for concurrency in (1, 3, 8, 32):
        result = desired_workers(FleetWork({TTS_MODEL: 10**6}), [TTS_FEED], concurrency=concurrency)
        assert result.workers == math.ceil(98 / 60 * 9.0 / concurrency)
        assert result.cap_slots == pytest.approx(98 / 60 * 9.0)


def test_the_breakdown_names_each_models_jobs_and_cap() -> None:
    result = desired_workers(
        FleetWork({TTS_MODEL: 5_000, ASR_MODEL: 3}), [TTS_FEED, ASR_FEED], concurrency=4
    ).to_dict()
    assert result["jobs"] == 5_003
    assert result["models"][TTS_MODEL] == {"jobs": 5_000, "slots": 14.7, "cap_slots": 14.7}
    assert result["models"][ASR_MODEL] == {"jobs": 3, "slots": 3.0, "cap_slots": 10.0}
    assert result["demand_slots"] == pytest.approx(17.7)


def test_an_exact_product_does_not_round_up_a_worker_more() -> None:
    feed = QuotaFeed(TTS_MODEL, "acct", grants_per_s=0.1 * 3, latency_p90_s=10.0)  # 3.0000…04
    assert desired_workers(FleetWork({TTS_MODEL: 99}), [feed], concurrency=1).workers == 3


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        ([], None),
        ([(5.0, 0)], None),  # a worker that made no call knows nothing
        ([(4.0, 100)], 4.0),
        ([(4.0, 100), (8.0, 100)], 6.0),
        ([(4.0, 300), (8.0, 100)], 5.0),  # weighted by calls
    ],
)
def test_fleet_p90_weights_workers_by_their_calls(
    samples: list[tuple[float, int]], expected: float | None
) -> None:
    assert fleet_p90(samples) == (None if expected is None else pytest.approx(expected))


def test_a_worker_reports_the_p90_of_its_recent_calls_per_account_and_model() -> None:
    latencies = CallLatencies(keep=100)
    for i in range(1, 301):  # 1..300 s; only the last 100 (201..300) are kept
        latencies.record("acct", TTS_MODEL, float(i))
    latencies.record("other", ASR_MODEL, 2.5)
    samples = {(s.account, s.model): s for s in latencies.samples()}
    assert samples[("acct", TTS_MODEL)].p90_s == 290.0
    assert samples[("acct", TTS_MODEL)].calls == 100
    assert samples[("other", ASR_MODEL)].p90_s == 2.5
    assert percentile([3.0, 1.0, 2.0], 0.9) == 3.0
    assert percentile([float(i) for i in range(1, 11)], 0.9) == 9.0
