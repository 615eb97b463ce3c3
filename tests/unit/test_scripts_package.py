"""mimoq/core/scripts: every Lua script mimoq runs is a file, none is a Python string (#22)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from arq.connections import ArqRedis

from mimoq.core import scripts
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


def test_every_script_named_in_the_code_is_a_file_of_the_package() -> None:
    named = {
        name
        for path in PACKAGE.rglob("*.py")
        for name in re.findall(
            r'scripts\.(?:source|named)\("([\w-]+)"\)', path.read_text(encoding="utf-8")
        )
    }
    assert named, "no module reads a script through scripts.source"
    files = {path.stem for path in SCRIPTS.glob("*.lua")}
    assert named <= files
    for name in named:
        # a script after a prelude may call only the prelude's functions (run_finish.lua)
        assert "redis.call" in scripts.source(name) or "return " in scripts.source(name)


def test_an_unknown_script_is_an_error() -> None:
    with pytest.raises(FileNotFoundError):
        scripts.source("no-such-script")


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
