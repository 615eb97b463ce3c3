"""MIMOQ_LIMIT_TARGET=auto: the highest target whose guard margin covers the lag (#22)."""

from __future__ import annotations

import pytest

from mimoq.core.pacing import AUTO_LAG_S, auto_target, margin_cap_s
from mimoq.core.settings import Settings


@pytest.mark.parametrize(
    ("window_s", "lag_s", "expected"),
    [
        (60.0, AUTO_LAG_S, 0.99),  # MiMo's minute: cap 0.303 s covers 0.25 s; 0.995's 0.151 s not
        (60.0, 0.1, 0.995),  # a measured lag this small leaves room for 0.995
        (60.0, 0.31, 0.985),  # past 0.99's cap: one step down
        (45.0, AUTO_LAG_S, 0.985),  # cap 0.343 s at 0.985, 0.227 s at 0.99
        (30.0, AUTO_LAG_S, 0.98),  # cap 0.228 s at 0.985: short of the lag
        (10.0, AUTO_LAG_S, 0.98),  # the compressed benches: nothing covers it, the floor
        (4.0, AUTO_LAG_S, 0.98),
        (1.0, AUTO_LAG_S, 0.98),
        (600.0, AUTO_LAG_S, 0.995),  # a long window: the highest step
        (60.0, 0.0, 0.995),
    ],
)
def test_auto_target_is_the_highest_whose_cap_covers_the_lag(
    window_s: float, lag_s: float, expected: float
) -> None:
    target = auto_target(window_s, lag_s)
    assert target == expected
    if target > 0.98:  # above the floor, the guard's margin still covers the lag
        assert margin_cap_s(window_s, target) >= lag_s


def test_margin_cap_is_half_the_slack_of_a_window() -> None:
    assert margin_cap_s(60.0, 0.99) == pytest.approx(60 * (1 / 0.99 - 1) / 2)
    assert margin_cap_s(10.0, 0.98) == pytest.approx(0.10204, abs=1e-4)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, 0.99),  # the default is auto, at the default 60 s window
        ({"MIMOQ_LIMIT_TARGET": "auto"}, 0.99),
        ({"MIMOQ_LIMIT_TARGET": "AUTO", "MIMOQ_LIMIT_WINDOW_S": "10"}, 0.98),
        ({"MIMOQ_LIMIT_WINDOW_S": "4"}, 0.98),
        ({"MIMOQ_LIMIT_TARGET": "0.9", "MIMOQ_LIMIT_WINDOW_S": "600"}, 0.9),  # a number wins
    ],
)
def test_the_setting_resolves_auto_from_the_window(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: float
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings().limiter.target == expected


@pytest.mark.parametrize("bad", ["fast", "0", "1.5"])
def test_a_bad_target_names_the_setting(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("MIMOQ_LIMIT_TARGET", bad)
    with pytest.raises(ValueError, match="MIMOQ_LIMIT_TARGET"):
        Settings()
