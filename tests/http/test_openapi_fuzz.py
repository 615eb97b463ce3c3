"""Schemathesis against a live ``mimoq serve`` (with a worker, a private redis-server and the
simulator): every answer is documented, in its documented content type and schema, no
request makes a 5xx, and no API route answers without its bearer token.

Bounded: a fixed seed and a few examples per operation, each phase run once, so the run is
the same every time. No ``--max-time``: since schemathesis 4 a time budget makes fuzzing and
stateful testing repeat until it is spent, so the run took the whole budget (45 s) on any
machine, and how many cases it tried depended on the machine's speed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.http.conftest import ALICE, Stack

pytestmark = [pytest.mark.redis, pytest.mark.slow]

CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance,ignored_auth"
)


def test_the_live_server_keeps_its_contract(stack: Stack, tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{stack.url}/openapi.json",
        "--checks", CHECKS,
        "--header", f"Authorization: Bearer {ALICE}",
        "--max-examples", "12",
        "--seed", "23",
        "--workers", "1",
        "--request-timeout", "60",
        "--max-redirects", "0",
        "--suppress-health-check", "all",
        "--no-color",
    ]  # fmt: skip
    # In tmp_path: the fuzzer keeps a cache of its own in its working directory.
    run = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]


def test_a_dashboard_form_too_large_is_refused_in_the_error_shape(stack: Stack) -> None:
    # The dashboard's handlers are not behind the API wrapper: their refusals reach the
    # app's handler for HTTPError (once a 500 with a traceback).
    answer = httpx.post(
        f"{stack.url}/login",
        content=b"token=" + b"x" * 8000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "request_too_large"
