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
    redis_server: RedisServer, base_url: str, data_dir: Path, keys: list[str], **changes: Any
) -> Settings:
    """Time-compressed settings whose key pool is ``keys`` (one account each); ``changes``
    as for ``Settings.updated``."""
    return Settings(
        redis_url=redis_server.url,
        mimo={
            "key": None,
            "keys": SecretStr(" ".join(keys)),
            "numbered_keys": {},
            "base_url": base_url,
        },
        storage={"data_dir": data_dir},
        retry={"backoff_base_s": 0.01, "backoff_max_s": 0.05, "max_tries": 4},
        worker={"poll_delay_s": 0.01},
        limiter={"enabled": False},
    ).updated(**changes)
