"""The Redis key table in docs/wire-format.md is checked against the one key table in code,
``mimoq.core.wire``: every key or prefix mimoq writes has a row, and every row names a key
that the code spells (issue #22: "the README's key table checked against that table")."""

from __future__ import annotations

import re
from pathlib import Path

from mimoq.core import wire

DOC = Path(__file__).resolve().parents[1] / "docs" / "wire-format.md"


def _code_keys() -> dict[str, str]:
    """Every ``mimoq:`` key or prefix constant of ``wire``, by its name."""
    return {
        name: value
        for name, value in vars(wire).items()
        if name.isupper() and isinstance(value, str) and value.startswith("mimoq:")
    }


def _documented() -> list[str]:
    """The literal part of every key named in the table's first column (``<id>`` and ``*``
    placeholders cut off: ``mimoq:result:<id>`` -> ``mimoq:result:``)."""
    keys = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `"):
            continue
        first = line.split("|")[1]
        for key in re.findall(r"`([^`]+)`", first):
            keys.append(re.split(r"[<*]", key, maxsplit=1)[0])
    return keys


def test_every_key_of_the_code_has_a_row() -> None:
    documented = _documented()
    missing = {
        name: value
        for name, value in _code_keys().items()
        if not any(doc == value or doc.startswith(value) for doc in documented)
    }
    assert missing == {}, f"add rows to {DOC.name} for {missing}"


def test_every_row_names_a_key_the_code_spells() -> None:
    spelled = [*_code_keys().values(), wire.ARQ_JOB_PREFIX, wire.ARQ_IN_PROGRESS_PREFIX]
    unknown = [
        doc for doc in _documented() if not any(doc.startswith(prefix) for prefix in spelled)
    ]
    assert unknown == [], f"{DOC.name} names keys no constant of mimoq.core.wire spells"


def test_the_table_is_read_at_all() -> None:
    # the two checks above would pass on an empty table
    assert len(_documented()) >= 25
    assert "mimoq:result:" in _documented()
