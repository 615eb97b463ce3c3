"""Settings: the MiMo host follows the key prefix; secrets never print."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mimoq.core.errors import ConfigurationError
from mimoq.core.pacing import auto_target
from mimoq.core.settings import LimiterSettings, Settings

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


def test_a_keyword_that_names_no_setting_is_refused() -> None:
    """The 0.1 flat names (``limit_window_s``) are gone: an unknown keyword is an error at
    every level, never dropped in silence."""
    with pytest.raises(ValidationError, match="limit_window_s"):
        Settings(limit_window_s=1)
    with pytest.raises(ValidationError, match="limit_window_s"):
        Settings(limiter={"limit_window_s": 1})
    with pytest.raises(ValidationError, match="limit_window_s"):
        LimiterSettings(limit_window_s=1)
    with pytest.raises(ValidationError, match="limit_window_s"):
        Settings().updated(limit_window_s=1)
    with pytest.raises(ValidationError, match="nope"):
        Settings().updated(limiter={"nope": 1})


def test_a_group_given_in_part_takes_the_rest_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MIMOQ_LIMIT_DEFAULT_RPM", "50")
    monkeypatch.setenv("MIMOQ_LIMIT_WINDOW_S", "120")
    monkeypatch.setenv("MIMOQ_CONCURRENCY", "3")
    for settings in (
        Settings(limiter={"window_s": 10}),
        Settings(limiter=LimiterSettings(window_s=10)),
    ):
        assert settings.limiter.window_s == 10  # the keyword wins over the environment
        assert settings.limiter.default_rpm == 50  # the rest of the group: the environment
        assert settings.limiter.target == auto_target(10.0) != auto_target(120.0)
        assert settings.worker.concurrency == 3  # other groups: the environment


def test_updated_changes_what_it_names_and_keeps_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MIMOQ_LIMIT_DEFAULT_RPM", "50")
    monkeypatch.setenv("MIMOQ_WEBHOOK_SECRET", "whsec_c2VjcmV0")
    settings = Settings(redis_url="redis://a:1/0", limiter={"burst": 4})
    monkeypatch.setenv("MIMOQ_LIMIT_DEFAULT_RPM", "70")  # read once: updated() ignores it
    new = settings.updated(limiter={"window_s": 10}, worker={"concurrency": 9})
    assert (new.limiter.window_s, new.limiter.burst, new.limiter.default_rpm) == (10, 4, 50)
    assert new.limiter.target == auto_target(10.0)  # a default is derived again
    assert new.worker.concurrency == 9
    assert new.redis_url == "redis://a:1/0" and new.webhook_secrets() == ["whsec_c2VjcmV0"]
    assert new.callbacks is settings.callbacks  # a group not named is the same object
    assert (settings.limiter.window_s, settings.worker.concurrency) == (60, 32)  # unchanged
    assert settings.updated(redis_url=" ").redis_url is None  # validated like Settings()
    with pytest.raises(ValidationError, match="window_s"):
        settings.updated(limiter={"window_s": -1})


def test_variables_that_are_not_settings_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the documented names configure mimoq: not the old flat names, not a field's
    bare name (a PaaS's PORT is not the HTTP port), not an unknown MIMOQ_ variable."""
    for name, value in {
        "LIMIT_WINDOW_S": "5", "PORT": "1234", "CONCURRENCY": "7", "HOST": "10.9.9.9",
        "URL": "ftp://x", "MIMOQ_NOT_A_SETTING": "1", "MIMOQ_LIMIT_MARGIN_S": "1",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings == Settings.model_validate({})  # every value its default


def test_a_refused_setting_does_not_echo_a_secret() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(mimo={"key": "sk-topsecret"}, limiter={"window_s": -1})
    assert "topsecret" not in str(info.value)
    with pytest.raises(ValidationError, match="webhook_secret") as info:
        Settings(webhook_secret="whsec_c2VjcmV0")  # an old flat name
    assert "c2VjcmV0" not in str(info.value)


def test_worker_flags_change_only_their_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """``mimoq worker --concurrency --metrics-port`` override those two settings; the rest
    is the environment's."""
    from mimoq.cli import parse_command_line, run
    from mimoq.worker import arq_worker

    monkeypatch.setenv("MIMOQ_CONCURRENCY", "5")
    monkeypatch.setenv("MIMOQ_POLL_DELAY_S", "0.5")
    built: list[tuple[Settings, dict[str, object]]] = []

    class NotRun:
        def run(self) -> None:
            pass

    def build_worker(settings: Settings, **options: object) -> NotRun:
        built.append((settings, options))
        return NotRun()

    monkeypatch.setattr(arq_worker, "build_worker", build_worker)
    args = parse_command_line(["worker", "--concurrency", "3", "--metrics-port", "0"])
    assert run._worker(args, Settings(redis_url="redis://a:1/0", mimo={"key": "sk-x"})) == 0
    [(settings, options)] = built
    assert (settings.worker.concurrency, settings.worker.poll_delay_s) == (3, 0.5)
    assert settings.ops.metrics_port == 0 and options["metrics_port"] is None
