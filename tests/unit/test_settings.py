"""Settings: the MiMo host follows the key prefix; secrets never print."""

from __future__ import annotations

import pytest

from mimoq.core.errors import ConfigurationError
from mimoq.core.settings import Settings

ENV = (
    "MIMO_API_KEY",
    "XIAOMI_API_KEY",
    "MIMO_BASE_URL",
    "MIMO_REGION",
    "REDIS_URL",
    "MIMOQ_WEBHOOK_SECRET",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("env", "base_url"),
    [
        ({}, "https://api.xiaomimimo.com/v1"),
        ({"MIMO_API_KEY": "sk-abc"}, "https://api.xiaomimimo.com/v1"),
        ({"XIAOMI_API_KEY": "sk-abc"}, "https://api.xiaomimimo.com/v1"),
        (
            {"MIMO_API_KEY": "tp-abc", "MIMO_REGION": "sgp"},
            "https://token-plan-sgp.xiaomimimo.com/v1",
        ),
        (
            {"MIMO_API_KEY": "tp-abc", "MIMO_REGION": "ams"},
            "https://token-plan-ams.xiaomimimo.com/v1",
        ),
        (
            {"MIMO_API_KEY": "tp-abc", "MIMO_BASE_URL": "http://127.0.0.1:9/v1/"},
            "http://127.0.0.1:9/v1",
        ),
        (
            {"MIMO_API_KEY": "sk-abc", "MIMO_BASE_URL": "https://proxy.example/v1"},
            "https://proxy.example/v1",
        ),
        ({"MIMO_API_KEY": "", "MIMO_BASE_URL": ""}, "https://api.xiaomimimo.com/v1"),
    ],
)
def test_base_url(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], base_url: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings().base_url() == base_url


def test_token_plan_key_without_region_fails_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIMO_API_KEY", "tp-secretvalue")
    with pytest.raises(ConfigurationError, match="MIMO_REGION") as info:
        Settings()
    assert "tp-secretvalue" not in str(info.value)


def test_bad_region_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIMO_REGION", "us")
    with pytest.raises(ValueError, match="MIMO_REGION"):
        Settings()


def test_secrets_do_not_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIMO_API_KEY", "sk-topsecret")
    monkeypatch.setenv("MIMOQ_WEBHOOK_SECRET", "whsec_c2VjcmV0 whsec_b3RoZXI=")
    settings = Settings()
    assert "topsecret" not in repr(settings) and "whsec" not in repr(settings)
    assert "topsecret" not in settings.model_dump_json()
    assert settings.api_key() == "sk-topsecret"
    assert settings.webhook_secrets() == ["whsec_c2VjcmV0", "whsec_b3RoZXI="]
