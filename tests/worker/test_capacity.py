"""Little's law sizing of worker concurrency, and the start-up warning when a fleet is short."""

from __future__ import annotations

from typing import Any

import pytest

from mimoq.core.dialect_constants import ASR_MODEL, TTS_MODEL
from mimoq.worker.capacity import (
    ModelDemand,
    capacity_warning,
    fleet_concurrency_needed,
    planning_latency_s,
    quota_request_rate,
    required_concurrency,
)


@pytest.mark.parametrize(
    ("requests_per_window", "window_s", "kwargs", "expected"),
    [
        (100, 60, {}, 100 / 60),
        (100, 60, {"target": 0.95}, 95 / 60),
        (100, 10, {}, 10.0),  # a time-compressed window
        # ASR at 66 tokens a call: 10K TPM allows 151 calls, so the 100 RPM still binds
        (100, 60, {"tokens_per_window": 10_000, "tokens_per_request": 66}, 100 / 60),
        # 4-minute clips (~2,721 tokens): the token quota binds at ~3.7 calls a minute
        (100, 60, {"tokens_per_window": 10_000, "tokens_per_request": 2721}, 10_000 / 60 / 2721),
        (100, 60, {"tokens_per_window": 10_000, "tokens_per_request": None}, 100 / 60),
    ],
)
def test_quota_request_rate(
    requests_per_window: int, window_s: float, kwargs: dict[str, Any], expected: float
) -> None:
    assert quota_request_rate(requests_per_window, window_s, **kwargs) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("rate", "latency", "expected"),
    [
        (100 / 60, 8.0, 14),  # the performance notes' figure: ~14 in flight at 8 s median
        (100 / 60, 15.0, 25),  # ~25 at a 15 s p95
        (100 / 60, 6.0, 10),  # exactly 10: float noise must not round it up to 11
        (2.0, 0.25, 1),
        (0.0, 30.0, 0),
        (1.0, 0.0, 0),
    ],
)
def test_required_concurrency(rate: float, latency: float, expected: int) -> None:
    assert required_concurrency(rate, latency) == expected


@pytest.mark.parametrize(
    ("mean", "deviation", "expected"),
    [(8.0, 0.0, 8.0), (8.0, 2.0, 12.0), (8.0, -1.0, 8.0)],
)
def test_planning_latency(mean: float, deviation: float, expected: float) -> None:
    assert planning_latency_s(mean, deviation) == expected


TTS_8S = ModelDemand(TTS_MODEL, 100 / 60, 8.0)
ASR_3S = ModelDemand(ASR_MODEL, 100 / 60, 3.0)


@pytest.mark.parametrize(
    ("workers", "concurrency", "demands", "need", "short"),
    [
        (1, 14, [TTS_8S], 14, False),
        (1, 13, [TTS_8S], 14, True),
        (2, 7, [TTS_8S], 14, False),
        (1, 14, [TTS_8S, ASR_3S], 19, True),  # the models share the same worker slots
        (4, 5, [TTS_8S, ASR_3S], 19, False),
        (1, 1, [], 0, False),
    ],
)
def test_capacity_warning(
    workers: int, concurrency: int, demands: list[ModelDemand], need: int, short: bool
) -> None:
    assert fleet_concurrency_needed(demands) == need
    warning = capacity_warning(workers=workers, concurrency=concurrency, demands=demands)
    assert (warning is not None) is short
    if warning is not None:
        assert f"needs about {need}" in warning
        assert f"MIMOQ_CONCURRENCY={-(-need // workers)}" in warning
        assert f"{workers * concurrency / need:.0%}" in warning
