"""Run the ``mimoq`` command as a real process, in an environment of the test's choosing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any MiMo/Redis settings, plus ``extra``.

    A worker started with it serves no metrics unless ``extra`` names a port: the default
    (9464) is one port for the whole machine, taken by whichever test of a parallel run
    (``pytest -n auto``) started its worker first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIMO", "XIAOMI", "REDIS_URL"))}
    env["PYTHONPATH"] = str(ROOT)
    env["MIMOQ_METRICS_PORT"] = "0"
    env.update(extra)
    return env


def mimoq_args(*args: str) -> list[str]:
    return [sys.executable, "-m", "mimoq.cli", *args]


def mimoq(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        mimoq_args(*args),
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def fresh_python(code: str) -> str:
    """What ``code`` prints, run by a new interpreter on this checkout with nothing imported
    before it and no environment but PATH (what a new ``mimoq`` process or library user
    starts from). Raises with its stderr if it fails."""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    if out.returncode != 0:
        raise AssertionError(f"exit {out.returncode}:\n{out.stderr}")
    return out.stdout.strip()
