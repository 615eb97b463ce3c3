"""The key pool: keys from every variable, hosts from prefixes, grouping into accounts."""

from __future__ import annotations

import pytest

from mimoq.core.errors import ConfigurationError
from mimoq.core.keyenv import numbered_keys
from mimoq.core.keypool import family_of_url, fingerprint, has_key, key_pool, usable_pool
from mimoq.core.settings import Settings
from mimoq.worker.limiter.config import account_fingerprint


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("MIMO", "XIAOMI")):
            monkeypatch.delenv(name)


def test_keys_from_every_variable_grouped_into_accounts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIMO_API_KEY", "sk-main")
    monkeypatch.setenv("MIMO_API_KEYS", "sk-a, sk-b  sk-main")  # a repeat is one key
    monkeypatch.setenv("MIMO_1_API_KEY", "tp-one")
    monkeypatch.setenv("MIMO_1_REGION", "sgp")
    monkeypatch.setenv("MIMO_1_ACCOUNT", "team")
    monkeypatch.setenv("MIMO_2_API_KEY", "sk-two")
    monkeypatch.setenv("MIMO_2_ACCOUNT", "team")
    monkeypatch.setenv("MIMO_10_API_KEY", "sk-ten")
    monkeypatch.setenv("MIMO_10_BASE_URL", "http://127.0.0.1:9/v1/")
    monkeypatch.setenv("MIMO_3_API_KEY", "   ")  # blank: not a key
    accounts = key_pool(Settings())
    names = [a.name for a in accounts]
    assert names == [fingerprint("sk-main"), fingerprint("sk-a"), fingerprint("sk-b"), "team",
                     fingerprint("sk-ten")]  # fmt: skip
    team = accounts[3]
    assert [k.source for k in team.keys] == ["MIMO_1_API_KEY", "MIMO_2_API_KEY"]
    assert team.keys[0].base_url == "https://token-plan-sgp.xiaomimimo.com/v1"
    assert team.keys[1].base_url == "https://api.xiaomimimo.com/v1"
    assert accounts[4].keys[0].base_url == "http://127.0.0.1:9/v1"
    # Keys never show in a repr (logs of the pool are safe).
    assert "sk-main" not in repr(accounts)


def test_a_single_key_keeps_the_limiter_account_it_always_had(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MIMO_API_KEY", "sk-legacy")
    assert [a.name for a in key_pool(Settings())] == [account_fingerprint("sk-legacy")]
    monkeypatch.setenv("MIMOQ_LIMIT_ACCOUNT", "shared")
    assert [a.name for a in key_pool(Settings())] == ["shared"]


def test_a_token_plan_preset_without_region_is_named_in_the_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MIMO_2_API_KEY", "tp-secretvalue")
    settings = Settings()
    [account] = key_pool(settings)
    assert account.keys[0].problem is not None and "MIMO_2_REGION" in account.keys[0].problem
    with pytest.raises(ConfigurationError) as info:
        usable_pool(settings)
    assert "MIMO_2_REGION" in info.value.message
    assert "tp-secretvalue" not in info.value.message
    monkeypatch.setenv("MIMO_REGION", "cn")  # the global region is the fallback
    assert usable_pool(Settings())[0].keys[0].base_url == "https://token-plan-cn.xiaomimimo.com/v1"


def test_a_key_on_the_other_host_family_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIMO_1_API_KEY", "tp-x")
    monkeypatch.setenv("MIMO_1_BASE_URL", "https://api.xiaomimimo.com/v1")
    [account] = key_pool(Settings())
    assert "401" in (account.keys[0].problem or "")
    assert family_of_url("https://token-plan-ams.xiaomimimo.com/v1") == "token_plan"
    assert family_of_url("http://127.0.0.1:8808/v1") is None


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [("MIMO_1_REGION", "eu", "MIMO_1_REGION"), ("MIMO_1_ACCOUNT", "a b", "MIMO_1_ACCOUNT")],
)
def test_bad_preset_companions_are_refused_by_name(name: str, value: str, says: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        numbered_keys({"MIMO_1_API_KEY": "sk-k", name: value})
    assert says in info.value.message


def test_no_key_is_an_anonymous_account_for_a_simulator() -> None:
    settings = Settings(mimo={"base_url": "http://127.0.0.1:9/v1"})
    assert not has_key(settings)
    [account] = usable_pool(settings)
    assert account.name == "anonymous"
    assert account.keys[0].base_url == "http://127.0.0.1:9/v1"
