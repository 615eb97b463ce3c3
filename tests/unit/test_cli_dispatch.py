"""``mimoq <command>`` imports its own command module only (mimoq.cli.COMMAND_MODULE): the
map must name every command each module registers, and parse exactly as the whole parser."""

from __future__ import annotations

import argparse
import importlib

import pytest

from mimoq.cli import COMMAND_MODULE, COMMAND_MODULES, build_parser, parse_command_line
from tests.support.cli import fresh_python


def _registered(module: str) -> list[str]:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    importlib.import_module(f"mimoq.cli.{module}").register(sub)
    return list(sub.choices)


def test_the_map_names_every_command_of_every_module_and_nothing_else() -> None:
    registered = {cmd: module for module in COMMAND_MODULES for cmd in _registered(module)}
    assert registered == COMMAND_MODULE


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "job-1"],
        ["speak", "Hello.", "--voice", "Mia", "--id", "x-1"],
        ["health", "--min-workers", "0", "--strict"],
        ["batch", "archive", "--progress", "none"],
        ["worker", "--metrics-port", "0"],
        ["accounts", "resume", "abc"],
        ["cancel", "a", "b"],
    ],
)
def test_one_commands_parser_parses_as_the_whole_one(argv: list[str]) -> None:
    assert vars(parse_command_line(argv)) == vars(build_parser().parse_args(argv))


def test_a_mistyped_command_is_answered_with_every_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        parse_command_line(["stauts", "job-1"])
    err = capsys.readouterr().err
    assert "invalid choice: 'stauts'" in err and "'status'" in err and "'worker'" in err


def test_a_command_does_not_import_the_worker_http_or_numpy() -> None:
    code = (
        "import sys\n"
        "from mimoq.cli import parse_command_line\n"
        "parse_command_line(['status', 'job-1'])\n"
        "heavy = ('numpy', 'mimoq.worker.arq_worker', 'mimoq.http.app', 'mimoq.sim.sim_app')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    assert fresh_python(code) == "[]"
