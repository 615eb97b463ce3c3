"""``bench/redis_memory.py`` runs ``bench/redis_cost.py``'s mix: it has every option the mix reads."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from tests.support.bench_scripts import load_bench


def test_the_mix_settings_read_every_option_the_memory_bench_parses(tmp_path: Path) -> None:
    # mix_settings read --rpm and --no-limiter, which only redis_cost.py parsed: the memory
    # bench stopped with an AttributeError before its first job
    memory = load_bench("redis_memory")
    cost = load_bench("redis_cost")
    args = memory.parse_args(["--rpm", "250"])
    sim = SimpleNamespace(url="http://127.0.0.1:9")
    _, spec = cost.mix_settings(args, "redis://127.0.0.1:1/0", sim, tmp_path, tmp_path, "s")
    assert spec.limits is True
    assert ("MIMOQ_LIMIT_DEFAULT_RPM", "250") in spec.extra_env
    _, off = cost.mix_settings(
        memory.parse_args(["--no-limiter"]), "redis://127.0.0.1:1/0", sim, tmp_path, tmp_path, "s"
    )
    assert off.limits is False
