"""The package's shape: names unique in the package (#23), read from the source with ``ast``.

A reader who meets ``decide`` or ``jobs.py`` should not have to ask "which one?". These tests
fail when a new module shares a basename with another, or a new public top-level function
or class shares its name with one in another module.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "mimoq"

#: Names a family of modules defines on purpose, one per module, looked up by module: every
#: ``mimoq.cli`` command module exposes ``register(subparsers)`` (``COMMAND_MODULES``).
PROTOCOL_NAMES: frozenset[str] = frozenset({"register"})

#: Names shared on purpose by modules that are always used through their module name: HTTP
#: route handlers (``job_routes.cancel``, ``files.create``) and CLI subcommand bodies
#: (``usage.run``, ``doctor.render``). The test fails when one is no longer shared, so the
#: list only shrinks. Do not add to it: give the new name one that says what it is.
MODULE_SCOPED_NAMES: frozenset[str] = frozenset({
    "cancel", "content", "create", "retrieve", "run", "render",
})  # fmt: skip


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _shared(where: dict[str, list[str]]) -> dict[str, list[str]]:
    return {name: paths for name, paths in where.items() if len(paths) > 1}


def _basenames() -> dict[str, list[str]]:
    where: dict[str, list[str]] = defaultdict(list)
    for path in _modules():
        if path.name not in ("__init__.py", "__main__.py"):
            where[path.stem].append(str(path.relative_to(PACKAGE)))
    return _shared(where)


def _top_level_names() -> dict[str, list[str]]:
    where: dict[str, list[str]] = defaultdict(list)
    for path in _modules():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            defines = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            if defines and not node.name.startswith("_"):
                where[node.name].append(str(path.relative_to(PACKAGE)))
    return _shared(where)


def test_module_basenames_are_unique_in_the_package() -> None:
    shared = _basenames()
    assert not shared, f"modules share a basename; rename one to say what it is: {shared}"


def test_top_level_names_are_unique_in_the_package() -> None:
    shared = _top_level_names()
    allowed = PROTOCOL_NAMES | MODULE_SCOPED_NAMES
    new = {name: paths for name, paths in shared.items() if name not in allowed}
    assert not new, f"public names defined in more than one module; rename one: {new}"
    fixed = MODULE_SCOPED_NAMES - shared.keys()
    assert not fixed, f"no longer shared; drop from MODULE_SCOPED_NAMES: {sorted(fixed)}"


def test_the_checks_see_a_collision() -> None:
    # The scans above must not be vacuous: the cli command modules' ``register`` is found.
    assert len(_top_level_names()["register"]) > 5


#: The longest a function may be, in lines from ``def`` to its last line (the team's rule):
#: past that, a function hides its steps; split it into named ones.
MAX_FUNCTION_LINES = 80


def test_no_function_is_over_80_lines() -> None:
    long: list[str] = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    where = f"{path.relative_to(PACKAGE)}:{node.lineno}"
                    long.append(f"{where} {node.name} ({lines} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines; split them: {long}"
