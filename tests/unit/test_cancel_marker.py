"""The cancel marker as Redis returns it (bytes, or str on a decoding connection) reads the
same wherever the worker checks it."""

from __future__ import annotations

import pytest

from mimoq.core.cancel_script import CANCELLED, GRANTED, is_cancelled


@pytest.mark.parametrize("marker", [CANCELLED, CANCELLED.encode()])
def test_a_cancelled_marker_reads_cancelled_in_either_type(marker: bytes | str) -> None:
    assert is_cancelled(marker)


@pytest.mark.parametrize("marker", [None, GRANTED, GRANTED.encode(), "", b"cancelled-not"])
def test_no_marker_or_a_grant_is_not_a_cancel(marker: bytes | str | None) -> None:
    assert not is_cancelled(marker)
