"""What a refused job's result record keeps of its owner: valid names only (issue 19, item 4)."""

from __future__ import annotations

from typing import Any

import pytest

from mimoq.core.jobs import salvage_owner


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"tenant": "alpha", "priority": "bulk"}, ("alpha", "bulk")),
        ({"tenant": "alpha"}, ("alpha", "interactive")),  # no lane named: it ran interactive
        ({}, (None, "interactive")),
        ({"tenant": "alpha\n", "priority": "urgent"}, (None, None)),
        ({"tenant": "-alpha", "priority": None}, (None, None)),
        ({"tenant": "a" * 65, "priority": "interactive"}, (None, "interactive")),
        ({"tenant": 7, "priority": ["bulk"]}, (None, None)),
        ("not a job", (None, None)),
        (None, (None, None)),
    ],
)
def test_only_valid_owner_fields_are_kept(raw: Any, expected: tuple[Any, Any]) -> None:
    assert salvage_owner(raw) == expected
