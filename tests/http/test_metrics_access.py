"""Who may read `mimoq serve`'s /metrics (pure: the decision and the start-up check)."""

from __future__ import annotations

import pytest

from mimoq.core.errors import ConfigurationError
from mimoq.core.settings import Settings
from mimoq.http.auth import TokenTable
from mimoq.http.metrics_route import check_metrics_token, may_scrape

ALICE = "tok-alice-0123456789abcdef"
BOB = "tok-bob-0123456789abcdef0000"
SCRAPER = "scrape-0123456789abcdef0123"
TOKENS = TokenTable([f"alice:{ALICE}", f"bob:{BOB}"])


def bearer(token: str) -> str:
    return f"Bearer {token}"


@pytest.mark.parametrize(
    ("settings", "tokens", "header", "allowed"),
    [
        # no token configured anywhere: serve is loopback-only, and so is /metrics' audience
        ({}, TokenTable([]), None, True),
        # API tokens only: a dashboard tenant's token, nothing else
        ({}, TOKENS, None, False),
        ({}, TOKENS, "Bearer ", False),
        ({}, TOKENS, bearer("tok-wrong-0123456789abcdef"), False),
        ({}, TOKENS, bearer(ALICE), True),
        ({"http_dashboard_tenants": "bob"}, TOKENS, bearer(ALICE), False),
        ({"http_dashboard_tenants": "bob"}, TOKENS, bearer(BOB), True),
        # a dedicated scraper token: it alone (a tenant's token no longer reads the fleet)
        ({"metrics_token": SCRAPER}, TOKENS, bearer(SCRAPER), True),
        ({"metrics_token": SCRAPER}, TOKENS, bearer(ALICE), False),
        ({"metrics_token": SCRAPER}, TOKENS, None, False),
        ({"metrics_token": SCRAPER}, TokenTable([]), None, False),
        ({"metrics_token": SCRAPER}, TokenTable([]), bearer(SCRAPER + "x"), False),
        ({"metrics_token": SCRAPER}, TokenTable([]), f"Basic {SCRAPER}", False),
    ],
)
def test_who_may_scrape(
    settings: dict[str, str], tokens: TokenTable, header: str | None, allowed: bool
) -> None:
    assert may_scrape(Settings(**settings), tokens, header) is allowed  # type: ignore[arg-type]


def test_the_metrics_token_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIMOQ_METRICS_TOKEN", SCRAPER)
    assert may_scrape(Settings(), TokenTable([]), bearer(SCRAPER))
    monkeypatch.setenv("MIMOQ_METRICS_TOKEN", "  ")  # blank is unset
    assert Settings().http.metrics_token is None


def test_a_short_metrics_token_stops_start_up_without_echoing_it() -> None:
    check_metrics_token(Settings(metrics_token=SCRAPER))  # type: ignore[call-arg]
    check_metrics_token(Settings())
    with pytest.raises(ConfigurationError, match="MIMOQ_METRICS_TOKEN needs at least 16") as bad:
        check_metrics_token(Settings(metrics_token="short-one"))  # type: ignore[call-arg]
    assert "short-one" not in str(bad.value)
