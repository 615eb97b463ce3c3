"""The layout report: lines per package and the longest functions of a source tree.

Not a speed benchmark: it backs the module map quoted for the layered package (issue #9).
Compare two trees side by side, e.g. the current one and an older commit checked out with
``git worktree add /tmp/before <rev>``::

    .venv/bin/python bench/module_map.py . /tmp/before
"""

from __future__ import annotations

import argparse
import ast
from collections import Counter
from pathlib import Path

SKIPPED = {"tests", "bench", ".venv", ".git"}


def measure(root: Path) -> tuple[Counter[str], list[tuple[int, str]]]:
    """(lines per package, [(length, where)] of every function), links not followed."""
    packages: Counter[str] = Counter()
    functions: list[tuple[int, str]] = []
    for path in root.rglob("*.py"):
        relative = path.relative_to(root)
        if SKIPPED & set(relative.parts) or any(
            p.is_symlink() for p in [path, *path.parents] if root in p.parents
        ):
            continue
        text = path.read_text(encoding="utf-8")
        package = "/".join(relative.parts[:2]) if len(relative.parts) > 2 else relative.parts[0]
        packages[package] += len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                functions.append((length, f"{relative}:{node.name}"))
    return packages, sorted(functions, reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+", type=Path, help="source trees to report")
    parser.add_argument("--longest", type=int, default=5, help="functions to list")
    args = parser.parse_args()
    for root in args.roots:
        packages, functions = measure(root.resolve())
        print(f"== {root}: {sum(packages.values())} lines")
        for package, lines in sorted(packages.items()):
            print(f"  {lines:6d}  {package}")
        for length, where in functions[: args.longest]:
            print(f"  longest: {length:4d}  {where}")


if __name__ == "__main__":
    main()
