"""PURE: the home of mimoq's Lua scripts (issue #22): each one a ``<name>.lua`` file here,
read through ``source``. Scripts still inline elsewhere move here one at a time."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def source(name: str) -> str:
    """The text of ``<name>.lua`` in this package (read once per process)."""
    return resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
