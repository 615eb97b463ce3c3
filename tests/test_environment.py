"""The suite does not depend on the developer's environment (checked in a child pytest run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import os
from mimoq.core.settings import Settings

def test_settings_see_none_of_the_exported_values():
    settings = Settings()
    assert settings.callbacks.allow_networks == ""
    assert settings.redis_url is None
    assert not any(name.startswith(("MIMO", "XIAOMI")) for name in os.environ)
"""


def test_exported_keys_and_allow_lists_do_not_reach_tests(tmp_path: Path) -> None:
    """A tp- key (which needs a region) and the README's local-development allow-list,
    exported in the shell, change nothing: collection works and the tests see defaults."""
    (tmp_path / "test_probe.py").write_text(PROBE, encoding="utf-8")
    env = {
        **os.environ,
        "MIMO_API_KEY": "tp-exported-by-the-developer",
        "MIMOQ_CALLBACK_ALLOW_NETWORKS": "127.0.0.0/8",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT),
         "-c", str(ROOT / "pyproject.toml"), "--confcutdir", str(ROOT), "-p", "tests.conftest",
         str(tmp_path / "test_probe.py")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
