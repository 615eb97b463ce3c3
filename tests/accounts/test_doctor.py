"""``mimoq doctor`` against the simulator: a good key, a tp- key on the wrong host, a missing
region, a host that refuses connections; each failure with its cause and fix, keys never shown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mimoq.sim.sim_config import SimConfig
from tests.accounts.conftest import simulator
from tests.conftest import free_port
from tests.support.cli import clean_env, mimoq

pytestmark = [pytest.mark.slow]
GOOD = "sk-doctor-good-key-0001"
PLAN = "tp-doctor-plan-key-0002"


def doctor(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, dict[str, Any]]:
    done = mimoq("doctor", "--json", *args, env=env, cwd=cwd, timeout=120)
    for secret in (GOOD, PLAN):
        assert secret not in done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout)


def checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["check"]: c for c in report["checks"]}


def test_a_good_key_passes_every_check_and_the_probe(tmp_path: Path) -> None:
    with simulator(SimConfig(api_keys=(GOOD,), family="payg")) as sim:
        env = clean_env(MIMO_1_API_KEY=GOOD, MIMO_1_BASE_URL=sim.url)
        code, body = doctor(env, tmp_path, "--probe")
    assert code == 0 and body["usable"] == 1 and body["unusable"] == 0
    [key] = body["keys"]
    assert key["source"] == "MIMO_1_API_KEY" and key["usable"]
    assert {n: c["outcome"] for n, c in checks(key).items()} == {
        "config": "ok", "connect": "ok", "models": "ok", "probe": "ok",
    }  # fmt: skip


def test_each_broken_key_is_named_with_its_cause_and_fix(tmp_path: Path) -> None:
    refused = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with simulator(SimConfig(api_keys=(GOOD, PLAN), family="payg")) as sim:
        env = clean_env(
            MIMO_1_API_KEY=GOOD, MIMO_1_BASE_URL=sim.url,
            MIMO_2_API_KEY=PLAN, MIMO_2_BASE_URL=sim.url,  # a tp- key on the payg host
            MIMO_3_API_KEY=PLAN + "-b",  # a tp- key with no region anywhere
            MIMO_4_API_KEY=GOOD + "-b", MIMO_4_BASE_URL=refused,
            MIMO_5_API_KEY=PLAN + "-c", MIMO_5_BASE_URL="https://api.xiaomimimo.com/v1",
        )  # fmt: skip
        code, body = doctor(env, tmp_path)
    assert code == 1 and body["usable"] == 1 and body["unusable"] == 4
    good, wrong_host, no_region, refusing, mismatch = body["keys"]
    assert good["usable"]
    failed = checks(wrong_host)["models"]
    assert failed["outcome"] == "fail" and "HTTP 401" in failed["detail"]
    assert "host family" in failed["cause"] and "token-plan" in failed["fix"]
    config = checks(no_region)["config"]
    assert config["outcome"] == "fail" and "MIMO_3_REGION" in config["detail"]
    connect = checks(refusing)["connect"]
    assert connect["outcome"] == "fail" and "nothing accepts connections" in connect["cause"]
    # A real host of the other family is caught before any network use.
    assert list(checks(mismatch)) == ["config"]
    assert "other host family" in checks(mismatch)["config"]["detail"]


def test_no_key_at_all_is_the_one_line_no_key_error(tmp_path: Path) -> None:
    done = mimoq("doctor", env=clean_env(), cwd=tmp_path, timeout=60)
    assert done.returncode == 2 and "MIMO_API_KEY" in done.stderr
    assert json.loads(done.stdout)["configuration"][0]["cause"] == "no MiMo API key"


def test_a_configuration_error_is_a_json_finding_with_its_cause_and_fix(tmp_path: Path) -> None:
    """Issue 19, item 5: a tp- key without MIMO_REGION stops every command at start-up; a
    script running ``doctor --json`` still gets a document to read, and a non-zero exit."""
    code, body = doctor(clean_env(MIMO_API_KEY=PLAN), tmp_path)
    assert code == 2
    assert body["usable"] == 0 and body["keys"] == []
    [finding] = body["configuration"]
    assert finding["check"] == "configuration" and finding["outcome"] == "fail"
    assert "Token Plan key" in finding["cause"] and "MIMO_REGION" in finding["fix"]


def test_a_value_pydantic_refuses_is_named_not_a_traceback(tmp_path: Path) -> None:
    env = clean_env(MIMO_API_KEY=GOOD, MIMOQ_CONCURRENCY="lots")
    code, body = doctor(env, tmp_path)
    assert code == 2
    [finding] = body["configuration"]
    assert finding["cause"].startswith("MIMOQ_CONCURRENCY: ") and "lots" not in finding["cause"]
    assert "MIMOQ_CONCURRENCY" in finding["fix"]
    other = mimoq("status", "some-job", env=env, cwd=tmp_path, timeout=60)
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert other.stderr.startswith("mimoq: configuration_error: MIMOQ_CONCURRENCY: ")
