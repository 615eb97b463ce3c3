"""Storage tests reuse the end-to-end fixtures: private Redis, the simulator, a real worker."""

from __future__ import annotations

from tests.e2e.conftest import (  # noqa: F401 (pytest finds fixtures by name)
    producer,
    receiver,
    settings,
    sim,
    sim_server,
    worker,
)
