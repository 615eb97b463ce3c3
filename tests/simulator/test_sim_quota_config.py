"""The simulator's quota from MIMOQ_SIM_QUOTA_* and --quota-* flags, and `mimoq sim` enforcing it."""

from __future__ import annotations

import argparse
from typing import Any

import httpx
import pytest

from mimoq.core.dialect_constants import ASR_MODEL, TTS_MODEL, VOICECLONE_MODEL
from mimoq.core.errors import ConfigurationError
from mimoq.sim.quota import QuotaAlgorithm, QuotaConfig, SimQuota, TokenAccounting
from mimoq.sim.sim_config import SimConfig, add_arguments, config_from_args, parse_limits
from mimoq.sim.sim_server import start_in_thread
from tests.simulator.sim_helpers import WAV_URI, tts

OFFICIAL = QuotaConfig()


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def _quota_config(config: SimConfig) -> QuotaConfig | None:
    if config.quota is None:
        return None
    assert isinstance(config.quota, SimQuota)
    return config.quota.config


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("100", {"*": 100}),
        ("mimo-v2.5-tts=60", {TTS_MODEL: 60}),
        ("50, mimo-v2.5-tts=60 mimo-v2.5-asr=0", {"*": 50, TTS_MODEL: 60, ASR_MODEL: 0}),
        ('{"mimo-v2.5-asr": 5000}', {ASR_MODEL: 5000}),
        ('{"mimo-v2.5-asr": "5000"}', {ASR_MODEL: 5000}),
        ("", {}),
    ],
)
def test_parse_limits(raw: str, expected: dict[str, int]) -> None:
    assert parse_limits(raw) == expected


@pytest.mark.parametrize(
    "raw", ["fast", "tts=", "=5", "tts=1.5", "-3", "[1, 2]", '{"tts": true}', '{"tts": -1}']
)
def test_parse_limits_refuses_nonsense(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_limits(raw)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),  # no quota unless asked for
        ({"MIMOQ_SIM_QUOTA": "false"}, None),
        ({"MIMOQ_SIM_QUOTA": "yes"}, OFFICIAL),
        ({"MIMOQ_SIM_QUOTA_WINDOW_S": "10"}, QuotaConfig(window_s=10)),  # a knob implies it
        (
            {"MIMOQ_SIM_QUOTA_RPM": "20, mimo-v2.5-tts-voiceclone=5"},
            QuotaConfig(default_rpm=20, rpm={VOICECLONE_MODEL: 5}),
        ),
        ({"MIMOQ_SIM_QUOTA_TPM": "mimo-v2.5-asr=3000"}, QuotaConfig(tpm={ASR_MODEL: 3000})),
        (
            {"MIMOQ_SIM_QUOTA_TPM": '{"mimo-v2.5-tts": 900}'},
            QuotaConfig(tpm={ASR_MODEL: 10_000, TTS_MODEL: 900}),
        ),  # merged over the official
        ({"MIMOQ_SIM_QUOTA_TPM": "mimo-v2.5-asr=0"}, QuotaConfig(tpm={})),  # 0: no token limit
        (
            {"MIMOQ_SIM_QUOTA_ALGORITHM": "token-bucket"},
            QuotaConfig(algorithm=QuotaAlgorithm.TOKEN_BUCKET),
        ),
        ({"MIMOQ_SIM_QUOTA_MAX_CONCURRENCY": "4"}, QuotaConfig(max_concurrency=4)),
        (
            {"MIMOQ_SIM_QUOTA_TOKEN_ACCOUNTING": "completion"},
            QuotaConfig(token_accounting=TokenAccounting.COMPLETION),
        ),
        ({"MIMOQ_SIM_QUOTA": "0", "MIMOQ_SIM_QUOTA_RPM": "5"}, None),  # off wins
        ({"MIMOQ_SIM_QUOTA_RPM": "  "}, None),  # blank means unset
    ],
)
def test_quota_from_the_environment(env: dict[str, str], expected: QuotaConfig | None) -> None:
    assert _quota_config(SimConfig.from_env(env)) == expected


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], {}, None),
        (["--quota"], {}, OFFICIAL),
        (
            ["--quota-rpm", "100", "--quota-window-s", "10", "--quota-algorithm", "sliding_window"],
            {},
            QuotaConfig(window_s=10, default_rpm=100),
        ),
        (
            ["--quota-tpm", "mimo-v2.5-asr=10000", "--quota-window-s", "10"],
            {},
            QuotaConfig(window_s=10),
        ),
        (
            ["--quota-max-concurrency", "8"],
            {"MIMOQ_SIM_QUOTA_WINDOW_S": "30"},
            QuotaConfig(window_s=30, max_concurrency=8),
        ),  # flags add to the environment's knobs
        (
            ["--quota-window-s", "5"],
            {"MIMOQ_SIM_QUOTA_WINDOW_S": "30"},
            QuotaConfig(window_s=5),
        ),  # and beat them knob by knob
        (["--no-quota"], {"MIMOQ_SIM_QUOTA_RPM": "7"}, None),
        (
            ["--quota"],
            {"MIMOQ_SIM_QUOTA": "false", "MIMOQ_SIM_QUOTA_RPM": "7"},
            QuotaConfig(default_rpm=7),
        ),
    ],
)
def test_quota_from_flags_over_the_environment(
    argv: list[str], env: dict[str, str], expected: QuotaConfig | None
) -> None:
    assert _quota_config(config_from_args(_parse(argv), env)) == expected


def test_quota_flags_keep_the_other_settings() -> None:
    config = config_from_args(
        _parse(["--quota-rpm", "3", "--latency-median-ms", "1000", "--quota-retry-after"]),
        {"MIMOQ_SIM_SEED": "9"},
    )
    assert (config.latency_median_ms, config.seed, config.quota_retry_after) == (1000.0, 9, True)
    assert _quota_config(config) == QuotaConfig(default_rpm=3)


@pytest.mark.parametrize(
    "argv",
    [
        ["--quota-rpm", "many"],
        ["--quota-algorithm", "leaky"],
        ["--quota-token-accounting", "later"],
        ["--quota-window-s", "soon"],
    ],
)
def test_cli_refuses_bad_quota_flags(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        _parse(argv)


@pytest.mark.parametrize(
    "env",
    [
        {"MIMOQ_SIM_QUOTA_RPM": "many"},
        {"MIMOQ_SIM_QUOTA_RPM": "mimo-v2.5-tts=0"},  # a request limit of 0 would refuse all
        {"MIMOQ_SIM_QUOTA_TPM": "5000"},  # a token limit must name its model
        {"MIMOQ_SIM_QUOTA_WINDOW_S": "0"},
        {"MIMOQ_SIM_QUOTA_MAX_CONCURRENCY": "0"},
        {"MIMOQ_SIM_QUOTA_ALGORITHM": "leaky_bucket"},
        {"MIMOQ_SIM_QUOTA": "maybe"},
    ],
)
def test_bad_quota_settings_are_configuration_errors(env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError):
        SimConfig.from_env(env)


def test_an_explicit_quota_override_wins_over_the_environment() -> None:
    mine = SimQuota(QuotaConfig(default_rpm=1))
    assert SimConfig.from_env({"MIMOQ_SIM_QUOTA_RPM": "50"}, quota=mine).quota is mine


def test_a_simulator_started_from_flags_enforces_the_quota() -> None:
    """What `mimoq sim --quota-rpm 2 --quota-window-s 60` serves: the third call is a 429."""
    config = config_from_args(_parse(["--quota-rpm", "2", "--quota-window-s", "60"]), {})
    with start_in_thread(config) as sim, httpx.Client(base_url=sim.url) as client:
        statuses = [client.post("/chat/completions", json=tts()).status_code for _ in range(3)]
        clone = tts(model=VOICECLONE_MODEL, audio={"format": "wav", "voice": WAV_URI})
        other = client.post("/chat/completions", json=clone)
        stats: dict[str, Any] = client.get(sim.base + "/_sim/stats").json()
    assert statuses == [200, 200, 429]
    assert other.status_code == 200  # each model has its own quota
    assert stats["quota"]["rejected"] == {TTS_MODEL: {"requests": 1}}
    assert stats["quota_rejected"] == {TTS_MODEL: 1}
