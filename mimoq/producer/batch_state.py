"""A batch run's files on disk: its plan, a journal of finished items, the reports."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from mimoq.core.storage import LocalStorage

#: Where runs live, under the data directory: ``batches/<run id>/``.
RUNS_DIR: Final = "batches"
REPORT_FIELDS: Final = ("input", "job_id", "status", "output", "error")


class ItemStatus(StrEnum):
    """Where one item of a run stands, as the reports spell it."""

    pending = "pending"  # planned, not yet enqueued
    queued = "queued"
    in_progress = "in_progress"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"  # docs/cancel.md


FINISHED: Final = frozenset({ItemStatus.succeeded, ItemStatus.failed, ItemStatus.cancelled})


@dataclass
class ItemRecord:
    """One line of a report: what went in, its job, and what came out (or why not)."""

    input: str
    job_id: str
    status: ItemStatus = ItemStatus.pending
    output: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"status": self.status.value}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ItemRecord:
        return cls(
            input=str(data["input"]),
            job_id=str(data["job_id"]),
            status=ItemStatus(data["status"]),
            output=data.get("output"),
            error=data.get("error"),
        )


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                data = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill: the item is simply not done yet
            if isinstance(data, dict):
                yield data


class RunFiles:
    """``<data dir>/batches/<run>/``: ``run.json``, ``items.jsonl``, ``journal.jsonl``,
    ``report.jsonl``, ``report.csv`` and ``digests.json`` (a cache of content hashes)."""

    def __init__(self, data_dir: Path, run_id: str) -> None:
        self.storage = LocalStorage(data_dir)
        self.run_id = run_id
        self.prefix = f"{RUNS_DIR}/{run_id}"
        self.dir = Path(self.storage.locate(self.prefix))

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def path(self, name: str) -> Path:
        return self.dir / name

    def exists(self) -> bool:
        return self.path("run.json").is_file()

    def write_json(self, name: str, data: Any) -> None:
        with self.storage.open_atomic(self.key(name)) as f:
            f.write(json.dumps(data, ensure_ascii=False, indent=1).encode())

    def read_json(self, name: str) -> Any:
        path = self.path(name)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def write_items(self, records: Iterable[ItemRecord]) -> None:
        """The plan, in order: one record per item (all pending)."""
        self._write_lines("items.jsonl", records)

    def read_items(self) -> list[ItemRecord]:
        return [ItemRecord.from_json(d) for d in _lines(self.path("items.jsonl"))]

    def journal(self) -> dict[str, ItemRecord]:
        """The last finished record of every job id (a later line wins)."""
        return {d["job_id"]: ItemRecord.from_json(d) for d in _lines(self.path("journal.jsonl"))}

    def journal_items(self) -> dict[tuple[str, str], ItemRecord]:
        """The last finished record of every (input, job id): items that share a job (the
        same recording under two names) each have their own."""
        return {
            (str(d["input"]), str(d["job_id"])): ItemRecord.from_json(d)
            for d in _lines(self.path("journal.jsonl"))
        }

    def append_journal(self, records: Iterable[ItemRecord]) -> None:
        """Note finished items; flushed and synced so a killed run keeps what it saw."""
        text = "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in records)
        if not text:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.path("journal.jsonl"), "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def write_reports(self, records: list[ItemRecord]) -> tuple[Path, Path]:
        """``report.jsonl`` and ``report.csv``: every item, in plan order."""
        self._write_lines("report.jsonl", records)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=REPORT_FIELDS, lineterminator="\n")
        writer.writeheader()
        for record in records:
            writer.writerow({k: ("" if v is None else v) for k, v in record.to_json().items()})
        with self.storage.open_atomic(self.key("report.csv")) as f:
            f.write(buf.getvalue().encode())
        return self.path("report.jsonl"), self.path("report.csv")

    def _write_lines(self, name: str, records: Iterable[ItemRecord]) -> None:
        with self.storage.open_atomic(self.key(name)) as f:
            for record in records:
                f.write((json.dumps(record.to_json(), ensure_ascii=False) + "\n").encode())
