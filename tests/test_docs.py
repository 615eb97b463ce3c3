"""The docs stay true: every setting documented in docs/configuration.md and nothing more, every
documented command real, the README short and pointing at pages that exist, CI building the
site strictly and running the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import AliasChoices

from mimoq.cli import build_parser
from mimoq.core.settings import GROUPS, Settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()
CONFIGURATION = (DOCS / "configuration.md").read_text()
COMMAND_LINE = (DOCS / "command-line.md").read_text()
VARIABLE = re.compile(r"`((?:MIMOQ|MIMO|XIAOMI|REDIS)_[A-Z0-9_]+)`")
#: Read by the logging set-up before the settings exist, so no settings model holds it.
NOT_A_SETTING = {"MIMOQ_LOG_LEVEL"}


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


def every_page() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(DOCS.glob("*.md"))}


@pytest.mark.parametrize("name", env_names())
def test_every_setting_is_in_the_configuration_reference(name: str) -> None:
    assert f"`{name}`" in CONFIGURATION


def test_the_configuration_reference_names_only_real_settings() -> None:
    documented = set(VARIABLE.findall(CONFIGURATION))
    assert documented - set(env_names()) <= NOT_A_SETTING


def test_no_page_mentions_a_variable_that_does_not_exist() -> None:
    for name, text in {"README.md": README, **every_page()}.items():
        unknown = set(VARIABLE.findall(text)) - set(env_names()) - NOT_A_SETTING
        assert not unknown, f"{name} mentions {sorted(unknown)}"


def test_ci_runs_the_readme_test_command_and_builds_the_docs_strictly() -> None:
    ci = (ROOT / ".ci/run").read_text()
    assert ".venv/bin/python -m pytest" in README
    assert ".venv/bin/python -m pytest" in ci
    assert re.search(r"mkdocs build --strict", ci)


def test_documented_commands_exist() -> None:
    parser = build_parser()
    commands = set(re.findall(r"^\| `mimoq ([a-z]+)", COMMAND_LINE, re.M))
    assert {"speak", "transcribe", "status", "worker", "sim", "demo"} <= commands
    for command in commands:
        args = {
            "speak": ["x"],
            "transcribe": ["a.wav"],
            "status": ["id"],
            "fetch": ["id"],
            "callbacks": ["list"],
            "cancel": ["id"],
        }.get(command, [])
        assert parser.parse_args([command, *args]).command == command


def test_the_readme_is_read_in_one_sitting() -> None:
    assert len(README.splitlines()) <= 400


def test_the_readmes_links_into_docs_name_pages_that_exist() -> None:
    targets = re.findall(r"\]\((docs/[^)#\s]+)(?:#[^)]*)?\)", README)
    assert targets
    for target in targets:
        assert (ROOT / target).is_file(), target


def test_every_page_is_in_the_sites_navigation() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = {next(iter(entry.values())) for entry in config["nav"]}
    assert nav == set(every_page())
    assert config.get("plugins", []) == ["search"]  # nothing that fetches at build time


def test_no_page_points_outside_the_repository() -> None:
    for name, text in {"README.md": README, **every_page()}.items():
        assert "/work/shared" not in text and "../shared" not in text, name
