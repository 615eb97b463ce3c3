"""What one dashboard load reads from Redis (in process, on a real Redis, with the fleet view
``mimoq serve`` is built with)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from starlette.testclient import TestClient

from mimoq.cli.serve import fleet_view
from mimoq.core import usage_windows
from mimoq.core.settings import Settings
from mimoq.core.tenant_limits import DAY_S
from mimoq.http.app import build_app
from mimoq.http.auth import TokenTable
from tests.conftest import RedisServer

pytestmark = [pytest.mark.redis]


def test_one_dashboard_load_reads_the_usage_report_once(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The usage panel and the held tenants come from one read of the day's usage (the
    held list used to read it all again)."""
    sync_redis.Redis.from_url(redis_server.url).flushall()
    settings = Settings(
        redis_url=redis_server.url,
        storage={"data_dir": tmp_path},
        usage={"tenant_limits": "alpha:requests=5/1d"},
    )
    reads: list[float] = []
    original = usage_windows.read_span

    async def counted(*args: Any, **kwargs: Any) -> usage_windows.UsageTable:
        reads.append(kwargs["since_s"])
        return await original(*args, **kwargs)

    monkeypatch.setattr(usage_windows, "read_span", counted)
    # No API tokens: the dashboard opens without a login (serve then binds loopback only).
    with TestClient(build_app(settings, TokenTable([]), fleet_view(settings))) as http:
        page = http.get("/")
    assert page.status_code == 200
    assert "requests=5/1d" in page.text  # the limits table still shows alpha's limit
    assert reads == [DAY_S]
