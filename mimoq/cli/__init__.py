"""The ``mimoq`` command: the composition root (the one module that imports worker and producer)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from mimoq.cli.configuration import load_settings
from mimoq.cli.overview import DESCRIPTION, EPILOG
from mimoq.core import tracing
from mimoq.core.errors import ConfigurationError, MimoqError
from mimoq.core.keypool import pool_secrets
from mimoq.core.logs import configure, register_secrets
from mimoq.core.settings import Settings

#: Every command module exposes ``register(subparsers)``; each parser sets ``func``, a
#: ``Handler`` that returns the process exit code.
Handler = Callable[[argparse.Namespace, Settings], int]
#: A command that reports a configuration error its own way sets ``on_configuration_error``.
ConfigurationReport = Callable[[argparse.Namespace, ConfigurationError], int]
COMMAND_MODULES: tuple[str, ...] = (
    "job_commands", "run", "demo", "callbacks", "limits", "ops", "batch", "serve", "accounts",
    "doctor", "acl",
    "fetch_command",
    "cancel_command",
    "usage",
)  # fmt: skip


#: Which module registers each command: ``mimoq <command>`` imports that module alone. The
#: others import the worker, the HTTP server, the simulator and numpy, ~0.3 s of CPU at the
#: start of every process. tests/unit/test_cli_dispatch.py checks it against the modules.
COMMAND_MODULE: dict[str, str] = {
    "speak": "job_commands", "transcribe": "job_commands", "status": "job_commands",
    "worker": "run", "sim": "run", "demo": "demo", "callbacks": "callbacks",
    "limits": "limits", "health": "ops", "inspect": "ops", "batch": "batch", "serve": "serve",
    "accounts": "accounts", "doctor": "doctor", "acl": "acl", "fetch": "fetch_command",
    "cancel": "cancel_command", "usage": "usage",
}  # fmt: skip


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    """The ``mimoq`` parser with the commands of ``modules`` (all by default)."""
    import importlib

    parser = argparse.ArgumentParser(
        prog="mimoq", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in modules:
        importlib.import_module(f"mimoq.cli.{name}").register(sub)
    return parser


def parse_command_line(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse with only the named command's module when the first argument names one; the
    whole parser otherwise (``mimoq --help``, a mistyped command: it lists every command)."""
    args = list(sys.argv[1:] if argv is None else argv)
    module = COMMAND_MODULE.get(args[0]) if args else None
    return build_parser(COMMAND_MODULES if module is None else (module,)).parse_args(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_command_line(argv)
    # Long-running commands log at INFO; one-shot commands keep stderr for warnings and errors.
    configure(level=os.environ.get("MIMOQ_LOG_LEVEL") or str(getattr(args, "log_level", "WARNING")))
    try:
        settings = _settings_for(args)
        if isinstance(settings, int):
            return settings
        register_secrets(settings.api_key(), *pool_secrets(settings), *settings.webhook_secrets())
        # Off unless OTEL_* variables turn it on (docs/production.md, "Tracing"); flushed
        # before exit. A worker's spans are made and exported in a sidecar process: the
        # SDK's own cost per span is a few percent of a job (mimoq.core.span_relay).
        tracing.setup_from_env(
            default_service=f"mimoq-{args.command}", relay=args.command == "worker"
        )
        handler: Handler = args.func
        return handler(args, settings)
    except MimoqError as exc:
        print(f"mimoq: {exc.error_type}: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        tracing.shutdown()


def _settings_for(args: argparse.Namespace) -> Settings | int:
    """The settings, or the exit code of a command that reports a configuration error
    itself (its parser sets ``on_configuration_error``: ``mimoq doctor``'s JSON)."""
    try:
        return load_settings()
    except ConfigurationError as exc:
        report: ConfigurationReport | None = getattr(args, "on_configuration_error", None)
        if report is None:
            raise
        return report(args, exc)


if __name__ == "__main__":
    sys.exit(main())
