"""mimoq batch runs in the bulk lane, under the tenant it is given, with stable ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from mimoq.cli.batch import _options, run_parser
from mimoq.core.errors import InvalidRequestError
from mimoq.core.jobs import parse_job
from mimoq.producer.batch_plan import SourceKind, default_run_id, plan_lines


@pytest.mark.parametrize(
    ("argv", "lane", "tenant"),
    [
        ([], "bulk", None),
        (["--tenant", "team-a"], "bulk", "team-a"),
        (["--priority", "interactive", "--tenant", "ops"], "interactive", "ops"),
    ],
)
def test_batch_items_carry_the_lane_and_tenant(
    tmp_path: Path, argv: list[str], lane: str, tenant: str | None
) -> None:
    source = tmp_path / "lines.txt"
    source.write_text("first line\nsecond line\n", encoding="utf-8")
    options = _options(run_parser().parse_args([str(source), *argv]))
    items = plan_lines(source, options)
    assert [item.job["priority"] for item in items if item.job] == [lane, lane]
    assert all(item.job and item.job.get("tenant") == tenant for item in items)
    assert all(parse_job(item.job).priority == lane for item in items if item.job)


def test_lane_and_tenant_change_neither_job_ids_nor_the_run_id(tmp_path: Path) -> None:
    source = tmp_path / "lines.txt"
    source.write_text("same text\n", encoding="utf-8")
    plain = _options(run_parser().parse_args([str(source)]))
    tenant = _options(run_parser().parse_args([str(source), "--tenant", "team-b"]))
    ids = [[i.job_id for i in plan_lines(source, o)] for o in (plain, tenant)]
    assert ids[0] == ids[1]
    assert default_run_id(source, SourceKind.lines, plain) == default_run_id(
        source, SourceKind.lines, tenant
    )


def test_a_bad_tenant_is_refused_naming_the_field(tmp_path: Path) -> None:
    source = tmp_path / "lines.txt"
    source.write_text("x\n", encoding="utf-8")
    options = _options(run_parser().parse_args([str(source), "--tenant", "no/slashes"]))
    (item,) = plan_lines(source, options)
    assert item.job is not None
    with pytest.raises(InvalidRequestError, match="tenant must be 1-64 characters"):
        parse_job(item.job)
