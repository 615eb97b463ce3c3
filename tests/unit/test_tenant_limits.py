"""MIMOQ_TENANT_LIMITS: the grammar (good and malformed forms) and the window arithmetic."""

from __future__ import annotations

import pytest

from mimoq.core.errors import ConfigurationError
from mimoq.core.settings import Settings
from mimoq.core.tenant_limits import (
    Limit,
    TenantLimits,
    TenantLimitsError,
    first_breach,
    parse_duration,
    parse_tenant_limits,
    starts_between,
    window_frees_at,
    window_start,
)

DAY, HOUR = 86_400, 3600


@pytest.mark.parametrize(
    ("text", "tenant", "expected"),
    [
        ("alpha:requests=5000/1d", "alpha", (Limit("requests", 5000, DAY),)),
        (
            "alpha:requests=5000/1d,audio_s=36000/1d;*:requests=20000/1d",
            "alpha",
            (Limit("requests", 5000, DAY), Limit("audio_s", 36000, DAY)),
        ),
        ("alpha:requests=5/1d;*:requests=20000/1d", "beta", (Limit("requests", 20000, DAY),)),
        ("alpha:requests=5/1d;*:requests=9/1h", None, (Limit("requests", 9, HOUR),)),
        ("_:chars=1e3/1h".replace("1e3", "1000"), None, (Limit("chars", 1000, HOUR),)),
        (" alpha : tokens=2.5/30s ; ", "alpha", (Limit("tokens", 2.5, 30),)),
        ("alpha:requests=5/15m,requests=50/1d", "alpha",
         (Limit("requests", 5, 900), Limit("requests", 50, DAY))),
        ("alpha:audio_in_s=60/1h,audio_out_s=60/1h", "alpha",
         (Limit("audio_in_s", 60, HOUR), Limit("audio_out_s", 60, HOUR))),
        ("alpha:requests=5/1d", "beta", ()),
        ("", "alpha", ()),
    ],
)  # fmt: skip
def test_good_forms(text: str, tenant: str | None, expected: tuple[Limit, ...]) -> None:
    assert parse_tenant_limits(text).for_tenant(tenant) == expected


@pytest.mark.parametrize(
    ("text", "tenant", "field"),
    [
        ("alpha", "alpha", "tenant"),
        ("alpha:", "alpha", "limits"),
        ("alpha:requests", "alpha", "requests"),
        ("alpha:requests=5", "alpha", "requests"),
        ("alpha:requests=5/1w", "alpha", "requests"),
        ("alpha:requests=five/1d", "alpha", "requests"),
        ("alpha:requests=-5/1d", "alpha", "requests"),
        ("alpha:requests=0/1d", "alpha", "requests"),
        ("alpha:requests=5/0s", "alpha", "requests"),
        ("alpha:requests=5/400d", "alpha", "requests"),
        ("alpha:audio=5/1d", "alpha", "audio"),
        ("alpha:failed=5/1d", "alpha", "failed"),
        ("alpha:requests=5/1d,requests=6/1d", "alpha", "requests"),
        ("alpha:requests=5/1d;alpha:chars=5/1d", "alpha", "tenant"),
        ("*:requests=5/1d;*:chars=5/1d", "*", "tenant"),
        ("../etc:requests=5/1d", "../etc", "tenant"),
        ("alpha:requests=5/1d;beta:tokens=5/1d,=3/1h", "beta", "=3/1h"),
    ],
)
def test_malformed_forms_name_tenant_field_and_form(text: str, tenant: str, field: str) -> None:
    with pytest.raises(TenantLimitsError) as caught:
        parse_tenant_limits(text)
    message = str(caught.value)
    assert f"tenant {tenant!r}" in message
    assert f"field {field!r}" in message
    assert "accepted form: TENANT:METRIC=AMOUNT/WINDOW" in message
    assert "\n" not in message


def test_settings_stop_on_a_malformed_value_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIMOQ_TENANT_LIMITS", "alpha:requests=5/1d,audio=3/1h")
    with pytest.raises(ConfigurationError, match="tenant 'alpha', field 'audio'"):
        Settings()
    monkeypatch.setenv("MIMOQ_TENANT_LIMITS", "alpha:requests=5/1d;*:audio_s=60/1h")
    limits = Settings().usage.limits()
    assert limits.for_tenant("alpha") == (Limit("requests", 5, DAY),)
    assert limits.windows() == (HOUR, DAY)


def test_the_setting_reads_back_as_written() -> None:
    text = "alpha:requests=5000/1d,audio_s=36000/1d;_:chars=10/30s;*:requests=20000/1d"
    limits = parse_tenant_limits(text)
    assert parse_tenant_limits(limits.text()) == limits
    assert limits.windows() == (30, HOUR, DAY)
    assert not TenantLimits().enabled and limits.enabled


@pytest.mark.parametrize(
    ("now", "window_s", "start", "frees"),
    [
        (0.0, DAY, 0, DAY),
        (DAY - 0.001, DAY, 0, DAY),
        (DAY, DAY, DAY, 2 * DAY),
        (1_765_000_123.5, HOUR, 1_764_997_200, 1_765_000_800),
        (1_765_000_123.5, 30, 1_765_000_110, 1_765_000_140),
        (59.999, 60, 0, 60),
    ],
)
def test_window_arithmetic(now: float, window_s: int, start: int, frees: int) -> None:
    assert window_start(now, window_s) == start
    assert window_frees_at(now, window_s) == frees


def test_a_span_covers_every_window_it_touches() -> None:
    assert starts_between(3500.0, 7300.0, HOUR) == [0, 3600, 7200]
    assert starts_between(7200.0, 7200.0, HOUR) == [7200]


def test_the_breach_is_the_limit_whose_window_frees_last() -> None:
    limits = (Limit("requests", 5, 60), Limit("requests", 50, HOUR), Limit("chars", 100, 60))
    now = 3_630.0  # 30 s into a minute window, 30 s into an hour window
    assert first_breach(limits, {("requests", 60): 4, ("chars", 60): 99.5}, now) is None
    minute = first_breach(limits, {("requests", 60): 5}, now)
    assert minute is not None and minute.frees_at == 3_660 and minute.used == 5
    both = first_breach(limits, {("requests", 60): 5, ("requests", HOUR): 51}, now)
    assert both is not None and both.limit == Limit("requests", 50, HOUR)
    assert both.frees_at == 7_200
    assert "tenant alpha used 51 of requests=50/1h" in both.reason("alpha")


@pytest.mark.parametrize(
    ("text", "seconds"), [("90m", 5400), ("24h", 86_400), ("7d", 604_800), ("400d", 34_560_000)]
)
def test_since_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0h", "24", "1w", "401d", "9470995d", "-1h", "h"])
def test_since_refuses_what_is_not_a_kept_span(text: str) -> None:
    with pytest.raises(ValueError, match=r"not a duration|at most 400d"):
        parse_duration(text)
