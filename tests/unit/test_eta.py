"""The run ETA estimator (mimoq.core.eta): table tests on an injected clock."""

from __future__ import annotations

import math

import pytest

from mimoq.core.eta import (
    Estimate,
    LaneLoad,
    estimate,
    measured_rate,
    round_robin_seconds,
    split_by_model,
)

NOW = 1_000_000.0


@pytest.mark.parametrize(
    ("times", "window", "rate"),
    [
        # 10 grants 0.5 s apart, all in the window: 2 per second
        ([NOW - 5 + 0.5 * i for i in range(10)], 60, 2.0),
        # the same pace over a window only partly busy (a run that just started): not diluted
        ([NOW - 1 + 0.25 * i for i in range(4)], 60, 4.0),
        # grants older than the window are not counted
        ([NOW - 100, NOW - 99, NOW - 2, NOW - 1, NOW], 10, 1.0),
        # too few to tell
        ([NOW - 1, NOW], 60, None),
        ([], 60, None),
        # grants "in the future" of an injected clock are ignored, not divided by
        ([NOW + 5, NOW + 6, NOW + 7], 60, None),
    ],
)
def test_measured_rate(times: list[float], window: float, rate: float | None) -> None:
    got = measured_rate(times, now=NOW, window_s=window)
    assert got == (None if rate is None else pytest.approx(rate))


@pytest.mark.parametrize(
    ("remaining", "competitors", "rate", "seconds"),
    [
        (0, [], 10.0, 0.0),
        (100, [], 10.0, 10.0),  # alone: the lane's whole rate
        (100, [1000], 10.0, 20.0),  # one competitor with more work: half the rate throughout
        # the competitor's 20 are done after 4 s (both at 5/s); the run's 80 left go at 10/s
        (100, [20], 10.0, 4.0 + 8.0),
        # three tenants: 10 and 30; phases at 10/3, 10/2, then 10 per second
        (100, [10, 30], 10.0, 3.0 + 4.0 + 7.0),
        (100, [0, -5], 10.0, 10.0),  # empty competitors take no turns
        (5, [5], 10.0, 1.0),  # equal backlogs end together
        (100, [], 0.0, math.inf),  # nothing granted: no end in sight
    ],
)
def test_round_robin_water_filling(
    remaining: int, competitors: list[int], rate: float, seconds: float
) -> None:
    assert round_robin_seconds(remaining, competitors, rate) == pytest.approx(seconds)


def test_when_a_competitor_finishes_the_eta_moves_up() -> None:
    load = LaneLoad(rate_per_s=10.0, competitors=(400,), latency_s=0.5)
    before = estimate(waiting_by_model={"tts": 100}, in_flight=2, loads={"tts": load}, now=NOW)
    gone = LaneLoad(rate_per_s=10.0, competitors=(), latency_s=0.5)
    after = estimate(waiting_by_model={"tts": 100}, in_flight=2, loads={"tts": gone}, now=NOW + 1)
    assert before == Estimate(20.5, NOW + 20.5)
    assert after == Estimate(10.5, NOW + 1 + 10.5)


@pytest.mark.parametrize(
    ("waiting", "in_flight", "loads", "expected"),
    [
        # nothing left at all: it ends now
        ({}, 0, {}, Estimate(0.0, NOW)),
        # only calls in flight: one latency
        ({}, 3, {"tts": LaneLoad(5.0, (), 1.5)}, Estimate(1.5, NOW + 1.5)),
        # ... of which 1 s went by since the newest grant: half a second left
        ({}, 3, {"tts": LaneLoad(5.0, (), 1.5, 1.0)}, Estimate(0.5, NOW + 0.5)),
        # ... or more than a latency: it ends now
        ({}, 1, {"tts": LaneLoad(5.0, (), 1.5, 4.0)}, Estimate(0.0, NOW)),
        # two models in parallel: the slower decides
        (
            {"tts": 50, "asr": 10},
            0,
            {"tts": LaneLoad(10.0), "asr": LaneLoad(1.0, (), 2.0)},
            Estimate(12.0, NOW + 12.0),
        ),
        # a model with no load known: cannot tell
        ({"tts": 5}, 0, {}, Estimate(None, None)),
        # a lane that grants nothing: cannot tell
        ({"tts": 5}, 0, {"tts": LaneLoad(0.0)}, Estimate(None, None)),
    ],
)
def test_estimate_table(
    waiting: dict[str, int], in_flight: int, loads: dict[str, LaneLoad], expected: Estimate
) -> None:
    assert estimate(waiting_by_model=waiting, in_flight=in_flight, loads=loads, now=NOW) == expected


def test_estimate_serializes_rounded() -> None:
    assert Estimate(12.345, NOW + 12.345).to_dict() == {"eta_s": 12.3, "eta_at": NOW + 12.3}
    assert Estimate(None, None).to_dict() == {"eta_s": None, "eta_at": None}


@pytest.mark.parametrize(
    ("waiting", "models", "split"),
    [
        (10, {"tts": 40}, {"tts": 10}),
        (10, {"tts": 30, "asr": 10}, {"tts": 8, "asr": 2}),
        (1, {"tts": 99, "asr": 1}, {"tts": 1, "asr": 1}),  # a model with any share counts
        (0, {"tts": 4}, {}),
        (3, {}, {}),
    ],
)
def test_split_by_model(waiting: int, models: dict[str, int], split: dict[str, int]) -> None:
    assert split_by_model(waiting, models) == split
