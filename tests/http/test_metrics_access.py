"""Who may read `mimoq serve`'s /metrics (pure: the decision and the start-up check)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import redis as sync_redis
from starlette.testclient import TestClient

from mimoq.cli.serve import fleet_view
from mimoq.core import wire
from mimoq.core.errors import ConfigurationError
from mimoq.core.settings import Settings
from mimoq.http.app import build_app
from mimoq.http.auth import TokenTable
from mimoq.http.metrics_route import check_metrics_token, may_scrape
from tests.conftest import RedisServer

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
        ({"http": {"dashboard_tenants": "bob"}}, TOKENS, bearer(ALICE), False),
        ({"http": {"dashboard_tenants": "bob"}}, TOKENS, bearer(BOB), True),
        # a dedicated scraper token: it alone (a tenant's token no longer reads the fleet)
        ({"http": {"metrics_token": SCRAPER}}, TOKENS, bearer(SCRAPER), True),
        ({"http": {"metrics_token": SCRAPER}}, TOKENS, bearer(ALICE), False),
        ({"http": {"metrics_token": SCRAPER}}, TOKENS, None, False),
        ({"http": {"metrics_token": SCRAPER}}, TokenTable([]), None, False),
        ({"http": {"metrics_token": SCRAPER}}, TokenTable([]), bearer(SCRAPER + "x"), False),
        ({"http": {"metrics_token": SCRAPER}}, TokenTable([]), f"Basic {SCRAPER}", False),
    ],
)
def test_who_may_scrape(
    settings: dict[str, dict[str, str]], tokens: TokenTable, header: str | None, allowed: bool
) -> None:
    assert may_scrape(Settings(**settings), tokens, header) is allowed


def test_the_metrics_token_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIMOQ_METRICS_TOKEN", SCRAPER)
    assert may_scrape(Settings(), TokenTable([]), bearer(SCRAPER))
    monkeypatch.setenv("MIMOQ_METRICS_TOKEN", "  ")  # blank is unset
    assert Settings().http.metrics_token is None


def test_a_short_metrics_token_stops_start_up_without_echoing_it() -> None:
    check_metrics_token(Settings(http={"metrics_token": SCRAPER}))
    check_metrics_token(Settings())
    with pytest.raises(ConfigurationError, match="MIMOQ_METRICS_TOKEN needs at least 16") as bad:
        check_metrics_token(Settings(http={"metrics_token": "short-one"}))
    assert "short-one" not in str(bad.value)


@pytest.mark.redis
def test_each_scrape_computes_the_fleets_desired_workers(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """serve's own /metrics, in process on a real Redis, with the fleet view ``mimoq serve``
    is built with: the value follows the waiting work from one scrape to the next."""
    settings = Settings(
        redis_url=redis_server.url,
        storage={"data_dir": tmp_path},
        worker={"concurrency": 2},
        http={"metrics_token": SCRAPER},
    )
    client = sync_redis.Redis.from_url(redis_server.url)
    client.flushall()
    app = build_app(settings, TOKENS, fleet_view(settings))
    scraper = {"Authorization": bearer(SCRAPER)}

    def gauge(http: TestClient) -> str:
        answer = http.get("/metrics", headers=scraper)
        assert answer.status_code == 200
        found = re.search(r"^mimoq_desired_workers (\S+)$", answer.text, re.MULTILINE)
        assert found is not None
        return found.group(1)

    with TestClient(app) as http:
        assert http.get("/metrics").status_code == 401
        assert gauge(http) == "0.0"  # nothing waits
        for i in range(3):  # what any producer does: enqueue.lua
            job = json.dumps({"kind": "speech", "input": "hi", "priority": "bulk"})
            client.eval(wire.enqueue_script(), 4, *wire.enqueue_keys(f"j{i}"), f"j{i}", job)
        assert gauge(http) == "2.0"  # 3 jobs, 2 slots a worker, far below the quota's cap
    client.close()
