"""``mimoq batch --output-format openai``: the run's results as OpenAI Batch output files.

``output.jsonl`` holds the requests that succeeded, ``errors.jsonl`` the rest, each line in
the shape the HTTP front door's batches produce (``custom_id``, ``response`` with
``status_code`` and ``body``, ``error``); audio is given by ``file://`` URL of its output.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any

from mimoq.http import batch_lines as lines
from mimoq.producer.batch_state import ItemRecord, RunFiles
from mimoq.producer.client import Producer


async def write_openai_files(
    producer: Producer, files: RunFiles, records: Sequence[ItemRecord]
) -> tuple[Path, Path]:
    """Write ``output.jsonl`` and ``errors.jsonl`` beside the run's reports; their paths."""
    output: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for record in records:
        custom_id = record.input
        result = await producer.result(record.job_id) if record.job_id else None
        if result is None:
            message = record.error or f"the request did not finish ({record.status.value})"
            errors.append(
                lines.not_run_line(custom_id, record.job_id or custom_id, "not_run", message)
            )
        elif result.status == "succeeded":
            # Duplicates share one job; each record names its own (copied) output file.
            out = PurePath(record.output) if record.output else None
            url = out.as_uri() if out is not None and out.is_absolute() else record.output
            output.append(lines.success_line(custom_id, result, url))
        else:
            errors.append(lines.failure_line(custom_id, result))
    paths = files.path("output.jsonl"), files.path("errors.jsonl")
    for path, rows in zip(paths, (output, errors), strict=True):
        path.write_text(
            "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8"
        )
    return paths
