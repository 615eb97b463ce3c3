"""Operators see a paused account everywhere they look, and can resume it by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from arq.connections import ArqRedis

from mimoq.core.errors import PaymentRequiredError
from mimoq.core.keypool import fingerprint
from mimoq.worker.accounts.breaker import Breaker, read_paused
from tests.conftest import RedisServer
from tests.support.cli import clean_env, mimoq

pytestmark = [pytest.mark.redis, pytest.mark.slow]
KEY = "sk-operator-visible-0001"


async def test_a_paused_account_in_health_limits_inspect_and_accounts(
    redis_server: RedisServer, redis: ArqRedis, tmp_path: Path
) -> None:
    account = fingerprint(KEY)
    breaker = Breaker(redis, probe_base_s=60, probe_max_s=60, pause_max_s=3600, trip_429s=5)
    await breaker.trip(
        account, PaymentRequiredError("MiMo answered HTTP 402: no funds", status=402)
    )
    env = clean_env(REDIS_URL=redis_server.url, MIMO_API_KEY=KEY, MIMO_7_API_KEY=KEY + "-b")

    def run(*args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
        done = mimoq(*args, env=env, cwd=tmp_path)
        assert KEY not in done.stdout + done.stderr
        return done.returncode, json.loads(done.stdout)

    code, health = run("health", "--min-workers", "0")
    assert code == 0 and health["accounts_paused"][0]["account"] == account
    code, strict = run("health", "--min-workers", "0", "--strict")
    assert code == 1 and strict["healthy"] is False
    _, limits = run("limits")
    # Each account of the pool has its own limiters; the first is also at the top level.
    assert [a["account"] for a in limits["accounts"]] == [account, fingerprint(KEY + "-b")]
    assert limits["account"] == account and limits["limiters"] == limits["accounts"][0]["limiters"]
    [paused] = limits["accounts_paused"]
    assert (paused["account"], paused["status"]) == (account, 402)
    assert "no funds" in paused["reason"] and paused["since"] > 0
    _, report = run("inspect", "--json")
    assert report["accounts_paused"][0]["account"] == account
    _, listed = run("accounts")
    assert [a["account"] for a in listed["configured"]] == [account, fingerprint(KEY + "-b")]
    assert listed["paused"][0]["account"] == account
    code, resumed = run("accounts", "resume", account)
    assert code == 0 and resumed == {"account": account, "resumed": True}
    assert await read_paused(redis) == []
    code, again = run("accounts", "resume", account)
    assert code == 1 and again["resumed"] is False
    code, healthy = run("health", "--min-workers", "0", "--strict")
    assert code == 0 and healthy["accounts_paused"] == []
