"""mimoq/core/scripts: every Lua script mimoq runs is a file, none is a Python string (#22)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from arq.connections import ArqRedis

from mimoq.core import scripts
from mimoq.worker.limiter.core import DECISION_SCRIPTS
from tests.conftest import RedisServer

PACKAGE = Path(__file__).resolve().parents[2] / "mimoq"
SCRIPTS = PACKAGE / "core" / "scripts"


def test_no_python_module_holds_a_lua_script() -> None:
    inline = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if "redis.call(" in path.read_text(encoding="utf-8")
    ]
    assert inline == [], f"move these scripts into mimoq/core/scripts/: {inline}"


#: Run through the registry's own calls only (LuaScript), nowhere else.
_BYPASSES = re.compile(
    r"register_script\(|\.eval\(|\.evalsha\(|script_load\(|LuaScript\(|scripts\.source\("
)


def test_no_module_runs_a_script_but_through_the_registry() -> None:
    bypasses = [
        f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if SCRIPTS not in path.parents
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if _BYPASSES.search(line)
    ]
    assert bypasses == [], f"run these through scripts.named(...): {bypasses}"


def test_every_script_file_is_declared_in_the_registry_and_every_entry_is_a_file() -> None:
    files = {path.stem for path in SCRIPTS.glob("*.lua")}
    declared = set(scripts.SCRIPTS) | {p for preludes in scripts.SCRIPTS.values() for p in preludes}
    assert declared <= files, f"declared without a file: {sorted(declared - files)}"
    undeclared = files - declared
    assert undeclared == set(), f"declare these in scripts.SCRIPTS: {sorted(undeclared)}"
    preludes = declared - set(scripts.SCRIPTS)
    assert preludes == {
        "breaker_now",
        "run_end_if_done",
        "limiter_common",
        "result_put",
        "delivery_put",
    }


def test_every_script_named_in_the_code_is_declared() -> None:
    named = {
        name
        for path in PACKAGE.rglob("*.py")
        for name in re.findall(r'scripts\.named\("([\w-]+)"\)', path.read_text(encoding="utf-8"))
    } | {f"limiter_{decision}" for decision in DECISION_SCRIPTS}  # named by decision
    assert set(scripts.SCRIPTS) - named == set(), "declared scripts no module runs"
    assert named <= set(scripts.SCRIPTS)


def test_a_script_is_built_once_after_its_preludes() -> None:
    gate = scripts.named("breaker_gate")
    assert gate is scripts.named("breaker_gate")
    assert gate.text.startswith(scripts.source("breaker_now"))
    assert gate.text.endswith(scripts.source("breaker_gate"))
    # the public scripts are their files as they are: foreign producers send those texts
    assert scripts.named("enqueue").text == scripts.source("enqueue")
    assert scripts.named("cancel").text == scripts.source("cancel")


def test_an_unknown_script_is_an_error() -> None:
    with pytest.raises(FileNotFoundError):
        scripts.source("no-such-script")
    with pytest.raises(KeyError, match="no-such-script"):
        scripts.named("no-such-script")
    with pytest.raises(KeyError, match="breaker_now"):
        scripts.named("breaker_now")  # a prelude, never run alone


async def test_a_script_runs_by_sha_and_is_loaded_again_after_a_flush(
    redis_server: RedisServer,
) -> None:
    """One EVALSHA per call, hashed once per process; SCRIPT LOAD only after NOSCRIPT."""
    redis = ArqRedis.from_url(redis_server.url)
    try:
        script = scripts.LuaScript("return redis.call('INCR', KEYS[1]) + ARGV[1]")
        assert scripts.named("usage_add") is scripts.named("usage_add")
        await redis.script_flush()
        await redis.config_resetstat()
        assert await script.run(redis, ["n"], [10]) == 11  # NOSCRIPT: loaded, run again
        assert await script.run(redis, ["n"], [10]) == 12
        async with redis.pipeline(transaction=False) as pipe:
            script.queue(pipe, ["n"], [10])
            (reply,) = await pipe.execute(raise_on_error=False)
        assert await script.settle(redis, reply, ["n"], [10]) == 13
        stats = await redis.info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] == 4  # the refused one, then three
        assert stats["cmdstat_script|load"]["calls"] == 1
        assert "cmdstat_eval" not in stats
    finally:
        await redis.aclose()


def test_the_limiter_runs_its_declared_decisions_only() -> None:
    source = (PACKAGE / "worker" / "limiter" / "core.py").read_text(encoding="utf-8")
    used = set(re.findall(r'(?:_run|_limiter_script)\("(\w+)"', source))
    assert used == set(DECISION_SCRIPTS)
