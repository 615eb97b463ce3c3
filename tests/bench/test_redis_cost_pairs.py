"""``bench/redis_cost.py --pairs N``: each pair's Redis CPU figures and their medians."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests.support.bench_scripts import load_bench


def phase(commands: int, cpu_s: float, user_s: float) -> dict[str, Any]:
    return {"counts": Counter(get=commands), "redis_cpu_s": cpu_s, "redis_user_s": user_s}


def test_a_pair_gives_its_commands_its_cpu_per_job_and_their_ratios() -> None:
    bench = load_bench("redis_cost")
    figures = bench.pair_figures(100, phase(2300, 0.02, 0.01), phase(6700, 0.08, 0.07))
    assert figures == pytest.approx((67.0, 0.2, 0.8, 4.0, 0.1, 0.7, 7.0))


def test_the_medians_are_taken_column_by_column(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench("redis_cost")
    pairs = [
        (phase(2300, 0.02, 0.01), phase(6000, 0.08, 0.06)),  # ratio 4.0
        (phase(2300, 0.04, 0.01), phase(7000, 0.08, 0.07)),  # ratio 2.0
        (phase(2300, 0.01, 0.01), phase(8000, 0.09, 0.08)),  # ratio 9.0
    ]
    bench.print_pairs(100, pairs)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("3 pairs")
    median = lines[-2].split()
    assert median[0] == "median"
    # each column's own median: the ratio's is 4.0, whichever pair it comes from
    assert [float(v) for v in median[1:]] == pytest.approx([70.0, 0.2, 0.8, 4.0, 0.1, 0.7, 7.0])


def test_redis_core_names_the_cpus_it_may_use_when_it_cannot_have_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bench = load_bench("redis_cost")
    monkeypatch.setattr(bench.os, "sched_getaffinity", lambda pid: {0, 1})
    assert bench.core_problem(1) is None
    assert bench.core_problem(5) == "--redis-core 5: this process may run on CPUs [0, 1] only"
    monkeypatch.setattr(bench.os, "sched_getaffinity", lambda pid: {3})
    problem = bench.core_problem(3)
    assert problem is not None and "2 CPUs at least" in problem
