"""Chunk job ids, chunk descriptions in errors, and usage summed over chunks."""

from __future__ import annotations

from typing import Any

import pytest

from mimoq.core.jobs import JOB_ID_PATTERN
from mimoq.core.splitting.plan import ChildSpec, child_id, chunk_key


@pytest.mark.parametrize(
    ("parent", "index", "expected"),
    [("job1", 0, "job1.p000"), ("t-abc", 12, "t-abc.p012"), ("x", 1234, "x.p1234")],
)
def test_child_ids(parent: str, index: int, expected: str) -> None:
    assert child_id(parent, index) == expected


@pytest.mark.parametrize("length", [120, 123, 124, 128])
def test_long_parent_ids_still_give_valid_distinct_child_ids(length: int) -> None:
    import re

    parent = "a" * length
    ids = {child_id(parent, i) for i in range(3)} | {child_id(parent[:-1] + "b", 0)}
    assert len(ids) == 4
    assert all(re.match(JOB_ID_PATTERN, i) for i in ids)


def test_chunk_keys() -> None:
    assert chunk_key("t-1", 3, ".wav") == "chunks/t-1/0003.wav"


@pytest.mark.parametrize(
    ("spec", "total", "text"),
    [
        (
            ChildSpec(index=2, job_id="x", start_s=252.0, end_s=483.5),
            7,
            "chunk 3/7 (4:12.0-8:03.5)",
        ),
        (
            ChildSpec(index=0, job_id="x", start_s=3600, end_s=3700.25),
            1,
            "chunk 1/1 (1:00:00.0-1:01:40.2)",
        ),
        (
            ChildSpec(index=1, job_id="x", start_char=2400, end_char=4800),
            2,
            "chunk 2/2 (characters 2400-4800)",
        ),
        (ChildSpec(index=4, job_id="x"), 5, "chunk 5/5"),
    ],
)
def test_chunks_describe_themselves_for_errors(spec: ChildSpec, total: int, text: str) -> None:
    assert spec.describe(total) == text


@pytest.mark.parametrize(
    ("usages", "total"),
    [
        ([None, None], None),
        (
            [{"total_tokens": 5}, None, {"total_tokens": 7, "seconds": 1.5}],
            {"total_tokens": 12, "seconds": 1.5},
        ),
        (
            [
                {"prompt_tokens_details": {"audio_tokens": 3}},
                {"prompt_tokens_details": {"audio_tokens": 4}},
            ],
            {"prompt_tokens_details": {"audio_tokens": 7}},
        ),
        ([{"model": "x", "cached": True, "n": 1}, {"n": 2}], {"n": 3}),  # only numbers add up
    ],
)
def test_usage_is_summed_field_by_field(
    usages: list[dict[str, Any] | None], total: dict[str, Any] | None
) -> None:
    from mimoq.worker.fanout import sum_usage

    assert sum_usage(usages) == total
