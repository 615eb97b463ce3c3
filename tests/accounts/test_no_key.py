"""No key, no wait: commands that would call MiMo stop at once with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import clean_env, mimoq


@pytest.mark.parametrize(
    "args",
    [
        ("speak", "hello"),
        ("transcribe", "missing.wav"),
        ("batch", "."),
        ("worker",),
    ],
)
def test_without_a_key_the_command_names_the_variable_and_the_demo(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    extra = {"MIMOQ_DATA_DIR": str(tmp_path / "data")}
    if args[0] == "worker":
        extra["REDIS_URL"] = "redis://127.0.0.1:9/0"  # never reached: the key check is first
    # A timeout far below the old 8 tries over 80 s: the command must not try at all.
    done = mimoq(*args, env=clean_env(**extra), cwd=tmp_path, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "MIMO_API_KEY" in lines[0] and "mimoq demo" in lines[0]


def test_a_producer_on_a_shared_redis_needs_no_key(tmp_path: Path) -> None:
    # It only enqueues; the fleet's workers hold the keys. (Redis is unreachable here, so
    # the command fails on the connection, not on the key.)
    env = clean_env(REDIS_URL="redis://127.0.0.1:9/0", MIMOQ_DATA_DIR=str(tmp_path))
    done = mimoq("speak", "hello", env=env, cwd=tmp_path, timeout=60)
    assert "MIMO_API_KEY" not in done.stderr


def test_a_worker_with_a_broken_preset_stops_before_connecting(tmp_path: Path) -> None:
    # Redis is unreachable: the worker must refuse the key before it would wait for Redis.
    env = clean_env(MIMO_2_API_KEY="tp-preset-without-region", REDIS_URL="redis://127.0.0.1:9/0")
    done = mimoq("worker", "--metrics-port", "0", env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 2
    assert "MIMO_2_REGION" in done.stderr and "tp-preset-without-region" not in done.stderr
