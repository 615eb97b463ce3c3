"""Account fixtures: the simulator as MiMo (its own, per test), settings for a key pool."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from mimoq.core.settings import Settings
from mimoq.sim.sim_config import SimConfig
from mimoq.sim.sim_server import RunningSim, start_in_thread
from tests.conftest import RedisServer


@contextlib.contextmanager
def simulator(config: SimConfig) -> Iterator[RunningSim]:
    with start_in_thread(config) as sim:
        yield sim


def pool_settings(
    redis_server: RedisServer, base_url: str, data_dir: Path, keys: list[str], **overrides: Any
) -> Settings:
    """Time-compressed settings whose key pool is ``keys`` (one account each)."""
    values: dict[str, Any] = {
        "mimo_api_key": None,
        "mimo_api_keys": SecretStr(" ".join(keys)),
        "mimo_numbered_keys": {},
        "mimo_base_url": base_url,
        "redis_url": redis_server.url,
        "data_dir": data_dir,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "max_tries": 4,
        "poll_delay_s": 0.01,
        "limits_enabled": False,
    }
    values.update(overrides)
    return Settings(**values)
