"""The README stays true: every setting documented, every command real, CI runs its test command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import AliasChoices

from mimoq.cli import build_parser
from mimoq.core.settings import GROUPS, Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def env_names() -> list[str]:
    """Every environment variable the settings models read (their upper-case aliases)."""
    names: list[str] = []
    models = [Settings, *GROUPS.values()]
    for model in models:
        for field in model.model_fields.values():
            alias = field.validation_alias
            choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
            # Lower-case choices are the old flat keyword names, not environment variables.
            names += [str(a) for a in choices if isinstance(a, str) and not a.islower()]
    return names


@pytest.mark.parametrize("name", env_names())
def test_every_setting_is_documented(name: str) -> None:
    assert f"`{name}`" in README


def test_every_documented_variable_exists() -> None:
    documented = set(re.findall(r"`((?:MIMOQ|MIMO|XIAOMI|REDIS)_[A-Z0-9_]+)`", README))
    assert documented - set(env_names()) <= {"MIMOQ_LOG_LEVEL"}


def test_ci_runs_the_readme_test_command() -> None:
    assert ".venv/bin/python -m pytest" in README
    assert ".venv/bin/python -m pytest" in (ROOT / ".ci/run").read_text()


def test_documented_commands_exist() -> None:
    parser = build_parser()
    commands = set(re.findall(r"^\| `mimoq ([a-z]+)", README, re.M))
    assert {"speak", "transcribe", "status", "worker", "sim", "demo"} <= commands
    for command in commands:
        args = {
            "speak": ["x"],
            "transcribe": ["a.wav"],
            "status": ["id"],
            "fetch": ["id"],
            "callbacks": ["list"],
        }.get(command, [])
        assert parser.parse_args([command, *args]).command == command
