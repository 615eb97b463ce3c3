"""``mimoq limits`` prints each limiter's state as JSON."""

from __future__ import annotations

import argparse
import asyncio
import json

import pytest
import redis as sync_redis
from arq.connections import ArqRedis

from mimoq.cli import limits
from mimoq.core.dialect_constants import ALL_MODELS, ASR_MODEL, TTS_MODEL
from mimoq.core.settings import Settings
from mimoq.worker.limiter import RedisLimiter
from mimoq.worker.limiter.config import LimiterConfig
from tests.conftest import RedisServer

pytestmark = pytest.mark.redis


def run_cli(argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser(prog="mimoq")
    limits.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args, settings)
    return code


async def _use(settings: Settings) -> None:
    redis = ArqRedis.from_url(settings.redis_url or "")
    try:
        limiter = RedisLimiter(LimiterConfig.from_settings(settings), redis)
        lease = await limiter.acquire(ASR_MODEL, job_id="a", audio_s=4.0)
        await limiter.release(lease, usage={"total_tokens": 70}, latency_s=8.0)
        await limiter.flush_releases()  # sent now, not after its batch's linger
        await limiter.acquire(ASR_MODEL, job_id="b", audio_s=4.0)  # still in flight
        await limiter.acquire(TTS_MODEL, job_id="c")
        await limiter.rate_limited(TTS_MODEL, 30.0)
    finally:
        await redis.aclose()


@pytest.fixture
def settings(redis_server: RedisServer) -> Settings:
    sync_redis.Redis.from_url(redis_server.url).flushall()
    return Settings(
        redis_url=redis_server.url,
        mimo={"key": "sk-cli-secret"},
        limiter={"burst": 5, "target": 0.98},
    )


def test_limits_shows_rates_use_cooldown_leases_and_tickets(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_use(settings))
    capsys.readouterr()  # the limiter's own log lines: not the command's output
    assert run_cli(["limits"], settings) == 0
    out = capsys.readouterr().out
    assert "sk-cli-secret" not in out
    report = json.loads(out)
    assert report["enabled"] is True and report["window_s"] == 60.0
    assert report["account"] == LimiterConfig.from_settings(settings).account
    by_model = {entry["model"]: entry for entry in report["limiters"]}
    assert list(by_model) == list(ALL_MODELS)
    asr, tts = by_model[ASR_MODEL], by_model[TTS_MODEL]
    assert (asr["requests_configured"], asr["tokens_configured"]) == (100, 10_000)
    assert asr["requests_effective"] == 98.0 and asr["tokens_effective"] == 9800.0
    # 70 reported for the first call; the second was estimated after calibrating on it:
    # 21 + 4 s x (11.25 + 0.2 x (49 / 4 - 11.25)) = 66.8, charged as 67
    assert (asr["requests_recent"], asr["tokens_recent"], asr["in_flight"]) == (2, 70 + 67, 1)
    assert asr["latency_ewma_s"] == 8.0
    # Little's law at the ASR pace (98 calls a minute at 8 s): 14 calls in flight
    assert asr["concurrency_needed"] == 14
    step = LimiterConfig.first_decrease  # the first 429 after a clean history
    assert tts["rate_factor"] == step
    assert tts["requests_effective"] == pytest.approx(100 * settings.limiter.target * step)
    assert 29 < tts["cooldown_remaining_s"] <= 30
    assert tts["rate_limited_total"] == 1 and "concurrency_needed" not in tts


def test_limits_for_chosen_models_and_when_disabled(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["limits", "--model", TTS_MODEL], settings) == 0
    report = json.loads(capsys.readouterr().out)
    assert [entry["model"] for entry in report["limiters"]] == [TTS_MODEL]
    assert report["limiters"][0]["tickets"] == 0
    disabled = settings.updated(limiter={"enabled": False})
    assert run_cli(["limits"], disabled) == 0
    assert json.loads(capsys.readouterr().out) == {"enabled": False}
