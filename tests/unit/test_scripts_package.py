"""mimoq/core/scripts: every Lua script mimoq runs is a file, none is a Python string (#22)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mimoq.core import scripts

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
        for name in re.findall(r'scripts\.source\("([\w-]+)"\)', path.read_text(encoding="utf-8"))
    }
    assert named, "no module reads a script through scripts.source"
    files = {path.stem for path in SCRIPTS.glob("*.lua")}
    assert named <= files
    for name in named:
        assert "redis.call" in scripts.source(name)


def test_an_unknown_script_is_an_error() -> None:
    with pytest.raises(FileNotFoundError):
        scripts.source("no-such-script")
