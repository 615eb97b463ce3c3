"""The docs stay true: every setting documented in docs/configuration.md and nothing more, every
documented command real, the README short and pointing at pages that exist, CI building the
site strictly and running the README's test command."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

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
    """Every environment variable the settings models read (their aliases)."""
    names: list[str] = []
    models = [Settings, *GROUPS.values()]
    for model in models:
        for field in model.model_fields.values():
            alias = field.validation_alias
            choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
            names += [a for a in choices if isinstance(a, str)]  # groups have none
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
    command = ".venv/bin/python -m pytest -n auto\n"  # side by side (pytest-xdist), alike
    assert command in README
    assert command in ci
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


def table_rows(text: str) -> list[tuple[list[str], list[str]]]:
    """The configuration table's rows: the variables of the first cell and the defaults of
    the second (``a`` / ``b`` pairs with two variables)."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows.append((re.findall(r"`([A-Z][A-Z0-9_<>]+)`", cells[0]), cells[1].split(" / ")))
    return rows


def field_of(name: str) -> tuple[type[Any], str]:
    """The settings model and field that read the environment variable ``name``."""
    for model in [*GROUPS.values(), Settings]:
        for field_name, field in model.model_fields.items():
            alias = field.validation_alias
            if name in (alias.choices if isinstance(alias, AliasChoices) else [alias]):
                return model, field_name
    raise AssertionError(f"no settings field reads {name}")


#: Defaults the table states as what they amount to rather than as the field's literal value
#: (the code derives them when the variable is unset), each with the reason.
DERIVED_DEFAULTS = {
    "MIMO_BASE_URL": "derived from the key's prefix and MIMO_REGION",
    "MIMOQ_STORAGE_URL": "file:// of MIMOQ_DATA_DIR",
    "MIMOQ_INPUT_ROOTS": "MIMOQ_DATA_DIR",
    "MIMOQ_LIMIT_ACCOUNT": "the key's fingerprint",
    "MIMOQ_LIMIT_TPM": "MiMo's published ASR token quota fills in for a model not named",
    "MIMO_<N>_API_KEY": "a family of variables, not one",
}
UNSET = (None, "", {}, (), [])


@pytest.mark.parametrize(
    ("name", "default"),
    [
        (name, default)
        for names, defaults in table_rows(CONFIGURATION)
        if len(names) == len(defaults)
        for name, default in zip(names, defaults, strict=True)
        if name not in NOT_A_SETTING and name not in DERIVED_DEFAULTS
    ],
)
def test_the_configuration_tables_default_is_the_models(
    name: str, default: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default column, read back through the model, is what the model has when unset."""
    model, field_name = field_of(name)
    monkeypatch.delenv(name, raising=False)
    actual = getattr(model(), field_name)
    if default.strip() == "—":
        assert actual in UNSET, f"{name}: the table says unset, the model has {actual!r}"
        return
    literal = re.match(r"`([^`]*)`", default.strip())
    assert literal, f"{name}: the default {default!r} is neither `a literal` nor —"
    monkeypatch.setenv(name, literal.group(1))
    assert getattr(model(), field_name) == actual, f"{name}: the table says {default}"


def test_every_derived_default_is_a_row_of_the_table() -> None:
    documented = {name for names, _ in table_rows(CONFIGURATION) for name in names}
    assert set(DERIVED_DEFAULTS) <= documented


def cited_in_the_code() -> list[tuple[str, str]]:
    """(file, cited page) for every ``docs/<page>.md`` the code, tests, benches and manifests cite."""
    cites = []
    for folder in ("mimoq", "tests", "bench", "deploy"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in {".py", ".lua", ".yaml", ".yml", ".md"} and path.is_file():
                for page in re.findall(r"\bdocs/([a-z0-9-]+\.md)", path.read_text()):
                    cites.append((str(path.relative_to(ROOT)), page))
    return cites


def test_every_docs_page_the_code_cites_exists() -> None:
    cites = cited_in_the_code()
    assert cites
    missing = [(where, page) for where, page in cites if not (DOCS / page).is_file()]
    assert not missing


def test_python_code_cites_docs_pages_not_readme_sections() -> None:
    stale = [
        str(path.relative_to(ROOT))
        for folder in ("mimoq", "tests", "bench")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if re.search(r"README,? \"", path.read_text())
    ]
    assert not stale, f"cite the docs/ page instead: {stale}"
