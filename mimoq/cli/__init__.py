"""The ``mimoq`` command: the composition root (the one module that imports worker and producer)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from mimoq.core import tracing
from mimoq.core.errors import MimoqError
from mimoq.core.keypool import pool_secrets
from mimoq.core.logs import configure, register_secrets
from mimoq.core.settings import Settings

#: Every command module exposes ``register(subparsers)``; each parser sets ``func``, a
#: ``Handler`` that returns the process exit code.
Handler = Callable[[argparse.Namespace, Settings], int]
COMMAND_MODULES: tuple[str, ...] = (
    "jobs", "run", "demo", "callbacks", "limits", "ops", "batch", "serve", "accounts", "doctor",
    "acl",
    "fetch",
    "cancel",
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="mimoq", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"mimoq.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Long-running commands log at INFO; one-shot commands keep stderr for warnings and errors.
    configure(level=os.environ.get("MIMOQ_LOG_LEVEL") or str(getattr(args, "log_level", "WARNING")))
    try:
        settings = Settings()
        register_secrets(settings.api_key(), *pool_secrets(settings), *settings.webhook_secrets())
        # Off unless OTEL_* variables turn it on (README, "Tracing"); flushed before exit.
        tracing.setup_from_env(default_service=f"mimoq-{args.command}")
        handler: Handler = args.func
        return handler(args, settings)
    except MimoqError as exc:
        print(f"mimoq: {exc.error_type}: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        tracing.shutdown()


if __name__ == "__main__":
    sys.exit(main())
