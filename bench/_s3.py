"""A SeaweedFS S3 server for the benches: the test suite's launcher, from the repository."""

from __future__ import annotations

import sys

from _support import BENCH_DIR

sys.path.insert(0, str(BENCH_DIR.parent))  # the repository root: tests.support is there

from tests.support.seaweed import SeaweedS3, start_seaweed


def start_s3() -> SeaweedS3:
    """Start SeaweedFS on free loopback ports; ``.env()`` gives the AWS_* to reach it."""
    return start_seaweed()
