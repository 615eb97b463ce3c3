"""structlog configuration: JSON lines in production, readable console output in a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any, Final

import structlog

REDACTED: Final = "[redacted]"
#: Shorter strings are not redacted: replacing them would garble ordinary words.
MIN_SECRET_CHARS: Final = 8
_secrets: set[str] = set()
# arq's "job started" line prints the job's arguments: user text, file paths, callback URLs
# and headers. The job id and task name stay; the arguments never reach the log.
_ARQ_START_FORMAT: Final = "%6.2fs → %s(%s)%s"


def register_secrets(*values: str | None) -> None:
    """Have every later log line scrubbed of these values (a last line of defence)."""
    for value in values:
        if value and len(value) >= MIN_SECRET_CHARS:
            _secrets.add(value)
            if value.startswith("whsec_") and len(value) - 6 >= MIN_SECRET_CHARS:
                _secrets.add(value[6:])  # the signing key itself, without its prefix


def _scrub(_logger: Any, _method: str, rendered: Any) -> Any:
    """Runs on the rendered line, so a secret inside a repr or a traceback is caught too."""
    if isinstance(rendered, str):
        for secret in sorted(_secrets, key=len, reverse=True):
            rendered = rendered.replace(secret, REDACTED)
    return rendered


class _HideArqJobArguments(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.msg == _ARQ_START_FORMAT and isinstance(args, tuple) and len(args) == 4:
            record.args = (args[0], args[1], "…", args[3])
        return True


class _CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a line is emitted, not when configured.

    ``mimoq.cli.main`` is also called in-process (tests, notebooks, embedding programs) while
    ``sys.stderr`` is a stand-in that is later closed; a handler holding that object would
    fail on every later line ("I/O operation on closed file").
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass  # always the current sys.stderr


def configure(*, level: str = "INFO", json_logs: bool | None = None) -> None:
    """Route structlog (and stdlib logging, e.g. arq's) to stderr through one pipeline."""
    if json_logs is None:
        json_logs = not sys.stderr.isatty()
    rendering: list[structlog.types.Processor] = (
        # Without format_exc_info a traceback would be lost in JSON (rendered as a repr).
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
        if json_logs
        else [structlog.dev.ConsoleRenderer(colors=False)]
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = _CurrentStderrHandler()
    handler.addFilter(_HideArqJobArguments())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *rendering,
                _scrub,
            ],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request line at INFO, including URLs: keep it quiet.
    logging.getLogger("httpx").setLevel(logging.WARNING)
