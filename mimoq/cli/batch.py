"""``mimoq batch SOURCE`` (a directory, a JSONL manifest or a text/CSV file) and
``mimoq batch status RUN``: archive-scale runs that resume, show progress and report."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mimoq.cli.batch_openai import write_openai_files
from mimoq.cli.batch_status import (
    EVENT_WAIT_S,
    redis_status,
    run_callback,
    run_eta,
    status_table,
    wait_for_event,
)
from mimoq.cli.cancel_command import run_cancel
from mimoq.cli.ctrl_c import CtrlC
from mimoq.cli.job_commands import add_audio_options, audio_fields
from mimoq.cli.producer_session import Session, open_session, require_key
from mimoq.core.connections import connect
from mimoq.core.errors import InvalidRequestError
from mimoq.core.jobs import check_run_name
from mimoq.core.settings import Settings
from mimoq.producer.batch_plan import (
    BatchOptions,
    PlannedItem,
    default_run_id,
    is_object_url,
    plan,
    source_kind,
)
from mimoq.producer.batch_run import BatchRunner, QuotaRate, counts, run_status
from mimoq.producer.batch_run import Progress as RunProgress
from mimoq.producer.batch_state import ItemRecord, ItemStatus, RunFiles
from mimoq.producer.cancel import cancel_jobs_of_run

USAGE: Final = """\
mimoq batch SOURCE [options]      run a batch (a directory, a .jsonl manifest, a .txt/.csv of lines)
mimoq batch status RUN [--json]   counts and ETA of a run, from Redis (else its local journal)
mimoq batch cancel RUN            cancel every unfinished job of the run"""
#: On Ctrl-C, how long calls already in flight (already paid for) get to bring their
#: answers back before an embedded run exits; the rest are cancelled and redone next run.
INTERRUPT_GRACE_S: Final = 10.0
#: Job fields the run options set on every item (unless the item sets its own).
_DEFAULT_FIELDS: Final = (
    "language",
    "response_format",
    "model",
    "voice",
    "instructions",
    "temperature",
    "priority",
    "tenant",
)


def register(sub: Any) -> None:
    batch = sub.add_parser(
        "batch", help="run a whole archive or manifest; resumable", usage=USAGE, add_help=False
    )
    # REMAINDER does not take a leading option, so `mimoq batch --help` needs its own flag.
    batch.add_argument("-h", "--help", action="store_true", dest="batch_help")
    batch.add_argument("args", nargs=argparse.REMAINDER)
    batch.set_defaults(func=_dispatch)


def run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mimoq batch", description=__doc__)
    parser.add_argument(
        "source",
        help="directory of recordings, s3://|gs://|az:// prefix of recordings, .jsonl "
        "manifest, or .txt/.csv",
    )
    parser.add_argument(
        "--glob", action="append", dest="patterns", metavar="PATTERN",
        help="files to take from a directory, relative to it (repeatable; default: every "
        "audio extension mimoq knows, at any depth)",
    )  # fmt: skip
    parser.add_argument(
        "--out", dest="out_prefix", metavar="PREFIX", help="output keys start with this"
    )
    parser.add_argument("--run-id", help="name the run (default: from the source and options)")
    parser.add_argument(
        "--callback", metavar="URL",
        help="POST one signed batch.completed (or batch.cancelled) event here when the run ends",
    )  # fmt: skip
    parser.add_argument("--force", action="store_true", help="redo every item, finished or not")
    parser.add_argument("--language", help="transcription: auto, zh or en")
    parser.add_argument(
        "--format",
        dest="response_format",
        help="json/text (transcripts; srt/vtt with --segments), wav/pcm (speech)",
    )
    parser.add_argument("--model", help="the MiMo model of every item")
    parser.add_argument("--voice", help="speech: a preset voice, or a sample for voiceclone")
    parser.add_argument(
        "--instructions", help="speech: style (the voice description for voicedesign)"
    )
    parser.add_argument("--temperature", type=float)
    add_audio_options(parser)
    parser.add_argument(
        "--priority", choices=("bulk", "interactive"), default="bulk",
        help="scheduling lane of every item (default bulk: interactive jobs go first)",
    )  # fmt: skip
    parser.add_argument(
        "--tenant",
        help="who the run is for: tenants share the bulk lane fairly (A-Z a-z 0-9 . _ -)",
    )
    parser.add_argument(
        "--progress", choices=("auto", "bar", "lines", "none"), default="auto",
        help="a live bar on a terminal, a line every --every seconds otherwise",
    )  # fmt: skip
    parser.add_argument(
        "--every", type=float, default=5.0, metavar="S", help="seconds between progress lines"
    )
    parser.add_argument(
        "--output-format", choices=("mimoq", "openai"), default="mimoq",
        help="openai: also write output.jsonl and errors.jsonl in OpenAI's Batch output format",
    )  # fmt: skip
    return parser


def status_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mimoq batch status", description="counts of a run's items"
    )
    parser.add_argument("run_id", metavar="RUN")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    return parser


def cancel_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mimoq batch cancel",
        description="cancel every unfinished job of a run (docs/cancel.md): one JSON "
        "object per job on stdout, the counts on stderr",
    )
    parser.add_argument("run_id", metavar="RUN")
    return parser


def _cancel(args: argparse.Namespace, settings: Settings) -> int:
    run_id: str = args.run_id
    return run_cancel(settings, lambda r: cancel_jobs_of_run(r, run_id, settings=settings))


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    rest: list[str] = args.args
    if args.batch_help or not rest or rest[0] in ("-h", "--help"):
        print(USAGE)
        print()
        run_parser().print_help()
        return 0
    if rest[0] == "status":
        return _status(status_parser().parse_args(rest[1:]), settings)
    if rest[0] == "cancel":
        return _cancel(cancel_parser().parse_args(rest[1:]), settings)
    return _run(run_parser().parse_args(rest), settings)


# --- running ---------------------------------------------------------------------------


def quotas(settings: Settings, models: Sequence[str]) -> dict[str, QuotaRate] | None:
    """Each model's quota as the fleet limiter paces it (None when limits are off)."""
    if not settings.limiter.enabled:
        return None
    from mimoq.worker.limiter.config import LimiterConfig

    config = LimiterConfig.from_settings(settings)
    out: dict[str, QuotaRate] = {}
    for model in set(models):
        quota = config.quota(model)
        pace = config.target / config.window_s
        out[model] = QuotaRate(
            requests_per_s=quota.requests * pace,
            tokens_per_s=quota.tokens * pace if quota.tokens else None,
            tokens_per_call=config.tokens_per_call,
            tokens_per_audio_s=config.tokens_per_audio_s,
        )
    return out


def _options(args: argparse.Namespace) -> BatchOptions:
    defaults = {k: v for k in _DEFAULT_FIELDS if (v := getattr(args, k)) is not None}
    defaults.update(audio_fields(args))
    options = BatchOptions(out_prefix=args.out_prefix, defaults=defaults)
    if args.patterns:
        options = BatchOptions(tuple(args.patterns), args.out_prefix, defaults)
    return options


def _run(args: argparse.Namespace, settings: Settings) -> int:
    source: Path | str = args.source if is_object_url(args.source) else Path(args.source)
    require_key(settings, calls_mimo=not settings.redis_url)  # before planning a long run
    if isinstance(source, Path) and not source.exists():
        raise InvalidRequestError(f"{source} does not exist", param="source")
    kind = source_kind(source)
    options = _options(args)
    run_id = args.run_id or default_run_id(source, kind, options)
    check_run_name(run_id, param="--run-id")
    files = RunFiles(settings.storage.data_dir, run_id)
    try:
        items = plan(source, kind, options, files)
    except (ValueError, OSError) as exc:
        raise InvalidRequestError(f"cannot plan the batch: {exc}", param="source") from None
    files.write_json(
        "run.json",
        {
            "id": run_id,
            "source": source if isinstance(source, str) else str(source.resolve()),
            "kind": kind.value,
            "total": len(items),
        },
    )
    files.write_items(ItemRecord(i.input, i.job_id, error=i.error) for i in items)
    # soft_wrap: off a terminal rich would hard-wrap at 80 columns, cutting paths in two.
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    err.print(f"batch {run_id}: {len(items)} item(s) from {source} ({kind.value})", markup=False)
    display = _display(args.progress, err, run_id, args.every)
    callback = asyncio.run(run_callback(settings, args.callback))
    records = asyncio.run(
        _execute(settings, files, items, args.force, display, err, args.output_format, callback)
    )
    return _finish(records, files, err)


async def _execute(
    settings: Settings,
    files: RunFiles,
    items: list[PlannedItem],
    force: bool,
    display: _Display,
    err: Console,
    output_format: str = "mimoq",
    callback: dict[str, Any] | None = None,
) -> list[ItemRecord]:
    ctrl_c = CtrlC()
    async with open_session(settings) as session:
        runner = BatchRunner(
            session.producer,
            files,
            items,
            force=force,
            quotas=quotas(settings, [i.model for i in items if i.job]),
            eta_source=functools.partial(run_eta, session.producer.redis, settings, files.run_id),
            callback=callback,
            stop_requested=ctrl_c.requested,
        )
        if shared := runner.duplicates():
            err.print(
                f"{shared} item(s) repeat another item's content and parameters: each such "
                "job runs once and its output is copied",
                markup=False,
            )
        with display, ctrl_c.watch():
            try:
                records = await runner.run(display.update)
            except asyncio.CancelledError:
                await _interrupted(settings, session, runner, err)
                if ctrl_c.requested():
                    raise KeyboardInterrupt from None  # exit 130, as for any Ctrl-C
                raise
        if callback is not None and session.embedded:  # the worker goes with this process
            await wait_for_event(session.producer.redis, files.run_id, EVENT_WAIT_S)
        if output_format == "openai":  # results are read while the (embedded) Redis is open
            for path in await write_openai_files(session.producer, files, records):
                err.print(f"openai: {path}", markup=False)
        return records


async def _interrupted(
    settings: Settings, session: Session, runner: BatchRunner, err: Console
) -> None:
    """Ctrl-C: calls already in flight are paid for, so let them finish briefly (not the
    whole shutdown grace), then journal every answer that came back before exiting."""
    grace = min(settings.worker.shutdown_grace_s, INTERRUPT_GRACE_S)
    if session.embedded:
        err.print(
            f"interrupted: letting calls in flight finish (up to {grace:g} s; Ctrl-C again "
            "to stop at once)",
            markup=False,
        )
        await session.stop_worker(grace)
    await runner.collect()


def _finish(records: list[ItemRecord], files: RunFiles, console: Console) -> int:
    jsonl, csv = files.path("report.jsonl"), files.path("report.csv")
    out = Console(file=sys.stdout, highlight=False, soft_wrap=True)
    out.print(summary_table(records, files.run_id))
    failed = [r for r in records if r.status == ItemStatus.failed]
    for record in failed[:10]:
        console.print(f"failed: {record.input}: {record.error}", markup=False)
    if len(failed) > 10:
        console.print(f"... and {len(failed) - 10} more failures: see the report")
    console.print(f"report: {jsonl}\nreport: {csv}", markup=False)
    return 1 if failed or any(r.status != ItemStatus.succeeded for r in records) else 0


def summary_table(records: Sequence[ItemRecord], run_id: str) -> Table:
    """The final counts of a run, as a table (plain text when not on a terminal)."""
    table = Table(title=f"batch {run_id}", show_edge=False)
    table.add_column("status")
    table.add_column("items", justify="right")
    for status, number in counts(records).items():
        if number:
            table.add_row(status.value, str(number))
    table.add_row("total", str(len(records)), style="bold")
    return table


# --- progress ----------------------------------------------------------------------------


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return (
        f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
    )


def progress_line(run_id: str, p: RunProgress) -> str:
    """One line of non-terminal progress: counts, rate and ETA, easy to grep and parse."""
    rate = f"{p.rate_per_s * 60:.1f}/min" if p.rate_per_s else "-/min"
    resumed = f", {p.resumed} from earlier runs" if p.resumed else ""
    return (
        f"batch {run_id}: {p.done}/{p.total} done ({p.succeeded} ok, {p.failed} failed{resumed}), "
        f"{p.in_progress} in flight, {p.queued + p.pending} waiting, {rate}, ETA {_clock(p.eta_s)}"
    )


class _Display:
    """A progress display: a context manager with an ``update(progress)`` method."""

    def __enter__(self) -> _Display:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, progress: RunProgress) -> None:
        return None


class _Lines(_Display):
    """A line every ``every_s`` seconds (and the last one), for logs and pipes."""

    def __init__(
        self,
        run_id: str,
        stream: TextIO,
        every_s: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._run_id = run_id
        self._stream = stream
        self._every = every_s
        self._clock = clock
        self._next = 0.0
        self._last: RunProgress | None = None
        self._printed = ""

    def update(self, progress: RunProgress) -> None:
        self._last = progress
        now = self._clock()
        if now >= self._next or progress.done == progress.total:
            self._next = now + self._every
            self._write(progress)

    def _write(self, progress: RunProgress) -> None:
        line = progress_line(self._run_id, progress)
        if line != self._printed:  # an idle run says nothing new: no repeated lines
            self._stream.write(line + "\n")
            self._stream.flush()
            self._printed = line

    def __exit__(self, *exc: object) -> None:
        if self._last is not None:  # the state when the run ended (or was interrupted)
            self._write(self._last)


class _Bar(_Display):
    """rich's live bar: done/total, failures, in flight, rate and a quota-aware ETA."""

    def __init__(self, run_id: str, console: Console) -> None:
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failed]} failed[/] {task.fields[flight]} in flight"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"),
            console=console,
        )
        self._task = self._bar.add_task(
            run_id, total=None, failed=0, flight=0, rate="-/min", eta="?"
        )

    def __enter__(self) -> _Display:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def update(self, progress: RunProgress) -> None:
        rate = f"{progress.rate_per_s * 60:.1f}/min" if progress.rate_per_s else "-/min"
        self._bar.update(
            self._task, total=progress.total, completed=progress.done, failed=progress.failed,
            flight=progress.in_progress, rate=rate, eta=_clock(progress.eta_s),
        )  # fmt: skip


def _display(mode: str, console: Console, run_id: str, every_s: float) -> _Display:
    if mode == "none":
        return _Display()
    if mode == "bar" or (mode == "auto" and console.is_terminal):
        return _Bar(run_id, console)
    return _Lines(run_id, sys.stderr, every_s)


# --- status ------------------------------------------------------------------------------


def _status(args: argparse.Namespace, settings: Settings) -> int:
    status = asyncio.run(redis_status(settings, args.run_id))
    if status is not None:  # Redis knows the run: its counts and ETA, from any host
        if args.json:
            print(json.dumps(status))
        else:
            Console(file=sys.stdout, highlight=False).print(status_table(status))
        return 0
    files = RunFiles(settings.storage.data_dir, args.run_id)
    if not files.exists():
        raise InvalidRequestError(
            f"no batch run {args.run_id!r} under {files.dir.parent}", param="RUN"
        )

    async def read() -> list[ItemRecord]:
        if not settings.redis_url:  # embedded runs keep nothing but their journal
            return await run_status(files, None)
        redis = connect(settings, ride_out_outages=True)  # a batch outlives a Redis restart
        try:
            return await run_status(files, redis)
        finally:
            await redis.aclose()

    records = asyncio.run(read())
    tally = {status.value: n for status, n in counts(records).items()}
    if args.json:
        print(json.dumps({"run": args.run_id, "total": len(records), **tally}))
    else:
        Console(file=sys.stdout, highlight=False).print(summary_table(records, args.run_id))
        print(f"reports: {files.path('report.jsonl')} {files.path('report.csv')}")
    return 0
