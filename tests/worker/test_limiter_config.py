"""The limiter's reading of the settings: quotas per model, the account, the key layout."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest

from mimoq.core import wire
from mimoq.core.dialect_constants import ALL_MODELS, ASR_MODEL, TTS_MODEL, VOICEDESIGN_MODEL
from mimoq.core.errors import ConfigurationError
from mimoq.core.pacing import AUTO, AUTO_TARGETS
from mimoq.core.settings import LimiterSettings, Settings
from mimoq.worker.limiter import usage_tokens
from mimoq.worker.limiter.config import (
    ANONYMOUS_ACCOUNT,
    KEY_PARTS,
    LimiterConfig,
    ModelQuota,
    account_fingerprint,
    limiter_keys,
)


@pytest.mark.parametrize(
    ("env", "model", "expected"),
    [
        ({}, TTS_MODEL, ModelQuota(100, None)),
        ({}, ASR_MODEL, ModelQuota(100, 10_000)),  # the official values
        ({}, "some-future-model", ModelQuota(100, None)),
        ({"MIMOQ_LIMIT_RPM": '{"mimo-v2.5-tts": 60}'}, TTS_MODEL, ModelQuota(60, None)),
        ({"MIMOQ_LIMIT_RPM": '{"mimo-v2.5-tts": 60}'}, VOICEDESIGN_MODEL, ModelQuota(100, None)),
        ({"MIMOQ_LIMIT_DEFAULT_RPM": "40"}, ASR_MODEL, ModelQuota(40, 10_000)),
        # overriding one model's tokens keeps the official ASR limit
        ({"MIMOQ_LIMIT_TPM": '{"mimo-v2.5-tts": 5000}'}, ASR_MODEL, ModelQuota(100, 10_000)),
        ({"MIMOQ_LIMIT_TPM": '{"mimo-v2.5-tts": 5000}'}, TTS_MODEL, ModelQuota(100, 5000)),
        ({"MIMOQ_LIMIT_TPM": '{"mimo-v2.5-asr": 0}'}, ASR_MODEL, ModelQuota(100, None)),
    ],
)
def test_quotas_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], model: str, expected: ModelQuota
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert LimiterConfig.from_settings(Settings()).quota(model) == expected


@pytest.mark.parametrize(
    ("env", "field", "expected"),
    [
        ({"MIMOQ_LIMIT_WINDOW_S": "10"}, "window_s", 10.0),
        ({"MIMOQ_LIMIT_TARGET": "0.97"}, "target", 0.97),
        ({"MIMOQ_LIMIT_MAX_IN_FLIGHT": "20"}, "max_in_flight", 20),
        ({}, "max_in_flight", None),
        ({"MIMOQ_LIMIT_ACCOUNT": "team-a"}, "account", "team-a"),
        ({"MIMOQ_LIMIT_ACCOUNT": "team-a", "MIMO_API_KEY": "sk-x"}, "account", "team-a"),
        ({}, "account", ANONYMOUS_ACCOUNT),
        # tuning constants that scale with time follow the window and the job timeout
        ({"MIMOQ_LIMIT_WINDOW_S": "6"}, "cooldown_s", 0.2),
        ({"MIMOQ_JOB_TIMEOUT_S": "900"}, "lease_ttl_s", 930.0),
        ({}, "lease_ttl_s", 330.0),
        # a variable that was a tuning constant changes nothing (CHANGELOG)
        ({"MIMOQ_LIMIT_HOLD_S": "3"}, "hold_s", 0.25),
    ],
)
def test_settings_reach_the_limiter(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], field: str, expected: Any
) -> None:
    monkeypatch.delenv("MIMO_API_KEY", raising=False)
    monkeypatch.delenv("XIAOMI_API_KEY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert getattr(LimiterConfig.from_settings(Settings()), field) == expected


@pytest.mark.parametrize(
    "env",
    [{"MIMOQ_LIMIT_RPM": '{"mimo-v2.5-tts": 0}'}, {"MIMOQ_LIMIT_TPM": '{"mimo-v2.5-asr": -5}'}],
)
def test_nonsense_quotas_fail_at_start_up(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match="MIMOQ_LIMIT"):
        LimiterConfig.from_settings(Settings())


@pytest.mark.parametrize("key", ["sk-topsecret-123", "tp-another-secret"])
def test_the_account_is_a_fingerprint_never_the_key(key: str) -> None:
    account = LimiterConfig.from_settings(Settings(mimo={"key": key, "region": "sgp"})).account
    assert account == hashlib.sha256(key.encode()).hexdigest()[:16]
    assert key not in account and key.split("-")[1] not in account
    assert all(key not in k for k in limiter_keys(account, ASR_MODEL))


def test_different_keys_are_different_accounts() -> None:
    assert account_fingerprint("sk-a") != account_fingerprint("sk-b")
    assert account_fingerprint(None) == account_fingerprint("") == ANONYMOUS_ACCOUNT


def test_keys_share_the_prefix_and_the_hash_tag() -> None:
    keys = limiter_keys("acct", ASR_MODEL)
    assert len(set(keys)) == len(KEY_PARTS)
    assert all(k.startswith(wire.LIMITER_PREFIX + "{acct:mimo-v2.5-asr}:") for k in keys)
    assert limiter_keys("acct", TTS_MODEL)[0] != keys[0]


def test_models_listed_by_default_include_configured_ones() -> None:
    config = LimiterConfig(account="a", rpm={"custom-model": 5})
    assert config.models() == [*ALL_MODELS, "custom-model"]


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (None, None),
        ({}, None),
        ({"prompt_tokens": 46, "completion_tokens": 20, "total_tokens": 66}, 66),
        ({"prompt_tokens": 46, "completion_tokens": 20}, 66),
        ({"prompt_tokens": 46}, None),
        ({"total_tokens": "66"}, None),
        ({"total_tokens": True}, None),
        ({"total_tokens": -1, "prompt_tokens": 5, "completion_tokens": 1}, 6),
        ({"total_tokens": 12.0}, 12),
    ],
)
def test_usage_tokens(usage: dict[str, Any] | None, expected: int | None) -> None:
    assert usage_tokens(usage) == expected


@pytest.mark.parametrize(
    ("window_s", "target", "margin_s", "expected"),
    [
        (60, 0.98, 0.5, 0.5),  # MiMo's minute: the configured margin fits
        (10, 0.98, 0.5, 10 * (1 / 0.98 - 1) / 2),  # time-compressed: capped near 0.1 s
        (10, 0.95, 0.1, 0.1),
        (60, 1.0, 0.5, 0.0),  # pacing at 100 %: no room for a margin at all
        (60, 0.9, 0.0, 0.0),
    ],
)
def test_the_guard_margin_never_paces_below_the_target(
    window_s: float, target: float, margin_s: float, expected: float
) -> None:
    config = LimiterConfig(account="a", window_s=window_s, target=target, margin_s=margin_s)
    assert config.guard_margin_s == pytest.approx(expected)
    # the guard's own rate (quota per window + margin) is never below the paced rate
    assert 1 / (window_s + config.guard_margin_s) >= target / window_s - 1e-12


#: The limiter's operator choices: each a setting with the config's default.
OPERATOR_FIELDS = ("window_s", "burst", "max_in_flight", "default_rpm", "bulk_min_share")
#: Derived from other settings (the account's key, MIMOQ_TENANT_LIMITS, the window, the job
#: timeout) or given per model (rpm, tpm).
DERIVED_FIELDS = ("account", "rpm", "tpm", "tenant_holds", "cooldown_s", "lease_ttl_s")


def test_the_configs_defaults_are_the_settings_defaults() -> None:
    """``LimiterConfig`` (what tests build directly) and the settings must not drift apart:
    every operator choice has a setting of its name with the same default, and every other
    field is a tuning constant with no setting (an operator reads the settings in one screen).
    The target's setting defaults to ``auto`` (core/pacing.py): its floor is the config's."""
    settings = LimiterSettings.model_fields
    assert settings["target"].default == AUTO and LimiterConfig.target == AUTO_TARGETS[-1]
    for field in dataclasses.fields(LimiterConfig):
        default = field.default if field.default is not dataclasses.MISSING else None
        if field.name in OPERATOR_FIELDS:
            assert settings[field.name].default == default, field.name
        elif field.name not in ("target", *DERIVED_FIELDS):
            assert field.name not in settings, f"{field.name} is a constant, not a setting"
    derived = LimiterConfig.from_settings(Settings())
    assert derived.cooldown_s == LimiterConfig.cooldown_s  # at the default 60 s window
