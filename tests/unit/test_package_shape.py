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

#: Collisions that predate this test and are still to be renamed, one mechanical commit each.
#: Listed so the debt is visible; the test fails when an entry is fixed but left here, so the
#: list only shrinks. Do not add to it: give the new module or name one that says what it is.
KNOWN_BASENAMES: frozenset[str] = frozenset({
})  # fmt: skip
KNOWN_NAMES: frozenset[str] = frozenset({
    # HTTP route handlers, always called through their module (``job_routes.cancel``)
    "cancel", "content", "create", "retrieve",
    # CLI subcommand bodies, likewise (``usage.run``, ``doctor.render``)
    "run", "render",
    # still to rename
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
    new = {name: paths for name, paths in shared.items() if name not in KNOWN_BASENAMES}
    assert not new, f"modules share a basename; rename one to say what it is: {new}"
    fixed = KNOWN_BASENAMES - shared.keys()
    assert not fixed, f"no longer shared; drop from KNOWN_BASENAMES: {sorted(fixed)}"


def test_top_level_names_are_unique_in_the_package() -> None:
    shared = _top_level_names()
    allowed = PROTOCOL_NAMES | KNOWN_NAMES
    new = {name: paths for name, paths in shared.items() if name not in allowed}
    assert not new, f"public names defined in more than one module; rename one: {new}"
    fixed = KNOWN_NAMES - shared.keys()
    assert not fixed, f"no longer shared; drop from KNOWN_NAMES: {sorted(fixed)}"


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
