"""Batch planning: jobs from a directory tree, a JSONL manifest or a file of lines, with ids
derived from content and parameters so that re-running a batch does only what is missing."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any, Final

import obstore
from obstore.exceptions import BaseError

from mimoq.core import dialect_constants as dc
from mimoq.core.errors import InvalidRequestError
from mimoq.core.inputs import ref_kind
from mimoq.core.openai_compat import is_batch_line, job_from_batch_line
from mimoq.core.remote import object_location
from mimoq.core.sources import probe_duration_s
from mimoq.core.splitting.convert import CONVERTIBLE
from mimoq.core.splitting.resample import SPLIT_FORMAT
from mimoq.core.splitting.split_limits import max_chunk_bytes
from mimoq.producer.batch_state import RunFiles

#: What a directory is searched for when no ``--glob`` is given.
DEFAULT_PATTERNS: Final = ("**/*.wav", "**/*.mp3", *(f"**/*{ext}" for ext in sorted(CONVERTIBLE)))
#: Job fields that do not change what MiMo is asked, so they are left out of derived ids:
#: the same recording (or text) under two names is one job, transcribed and paid for once;
#: the scheduling lane and tenant change nothing either.
_NOT_IN_ID: Final = frozenset({"id", "callback", "metadata", "output", "priority", "tenant"})
_HASH_BLOCK: Final = 1 << 20
#: With ``timestamps: "segment"``, a conversation has an utterance every ~5 s of recording
#: (bench/audio_billed.py: 701 requests for 60 minutes): the ETA counts one call for each.
SECONDS_PER_SEGMENT: Final = 5.0


class SourceKind(StrEnum):
    """What a batch reads its items from."""

    directory = "directory"  # audio files to transcribe, found by glob patterns
    manifest = "manifest"  # .jsonl: one job per line, the mimoq.core.jobs schema
    lines = "lines"  # .txt (one text per line) or .csv (a "text" column): texts to speak
    prefix = "prefix"  # s3://, gs:// or az:// prefix: its objects matching the patterns


def is_object_url(source: str | Path) -> bool:
    """Whether a batch source names an object-store prefix rather than a local path."""
    return isinstance(source, str) and ref_kind(source) == "object"


def source_kind(source: Path | str) -> SourceKind:
    """Tell the source's kind from what it is: an object-store prefix, a directory,
    ``.jsonl``, or a text/CSV file."""
    if is_object_url(source):
        return SourceKind.prefix
    source = Path(source)
    if source.is_dir():
        return SourceKind.directory
    if source.suffix.lower() in (".jsonl", ".ndjson"):
        return SourceKind.manifest
    return SourceKind.lines


@dataclass(frozen=True)
class BatchOptions:
    """How to turn a source into jobs. ``defaults`` are job fields given to every item that
    does not set them itself (language, response_format, model, voice, instructions...)."""

    patterns: tuple[str, ...] = DEFAULT_PATTERNS
    out_prefix: str | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class PlannedItem:
    """One item of a run: its job (None when it could not even be planned) and its cost."""

    input: str
    job: dict[str, Any] | None
    error: str | None = None
    #: Estimated MiMo calls (more than 1 for long inputs), for the quota-aware ETA.
    calls: int = 1
    audio_s: float = 0.0
    #: Audio in a format MiMo does not read: converted to this job's ``file`` before enqueueing.
    convert_from: Path | None = None
    #: SHA-256 of the input file (directory items), for recognising earlier runs' work.
    content_sha256: str | None = None

    @property
    def job_id(self) -> str:
        return str(self.job["id"]) if self.job else ""

    @property
    def model(self) -> str:
        if self.job is None:
            return ""
        default = dc.TTS_MODEL if self.job.get("kind") == "speech" else dc.ASR_MODEL
        return str(self.job.get("model") or default)


def derive_job_id(job: Mapping[str, Any], content_sha256: str | None = None) -> str:
    """A job id from what the job asks: its parameters, and its audio's content hash.

    The same text or the same recording with the same parameters always gets the same id,
    so enqueueing it again is a no-op, whatever its name: ``output``, ``callback`` and
    ``metadata`` change nothing MiMo is asked and are left out (an item that shares its
    job with another gets a copy of that job's output, see ``batch_run``).
    """
    return _derive(job, content_sha256, _NOT_IN_ID)


def legacy_job_id(job: Mapping[str, Any], output: str, content_sha256: str) -> str:
    """The id a version before content identity gave this job with output key ``output``
    (it hashed the output key too): how a run recognises work journaled by such a version."""
    return _derive({**job, "output": output}, content_sha256, _NOT_IN_ID - {"output"})


def _derive(job: Mapping[str, Any], content_sha256: str | None, left_out: frozenset[str]) -> str:
    params = {k: v for k, v in job.items() if k not in left_out and v is not None}
    if content_sha256 is not None:
        params["file"] = f"sha256:{content_sha256}"
    text = json.dumps(params, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    prefix = "s" if job.get("kind") == "speech" else "t"
    return f"{prefix}-{hashlib.sha256(text.encode()).hexdigest()[:40]}"


def default_run_id(source: Path | str, kind: SourceKind, options: BatchOptions) -> str:
    """``<source name>-<8 hex>``: the same source with the same options is the same run."""
    # the lane and tenant change nothing about the items: the same run under another tenant
    # is the same run
    fields = {k: v for k, v in options.defaults.items() if k not in ("priority", "tenant")}
    where = source.rstrip("/") if isinstance(source, str) else str(source.resolve())
    described = json.dumps(
        [where, kind.value, list(options.patterns), options.out_prefix, fields],
        sort_keys=True, ensure_ascii=False, default=str,
    )  # fmt: skip
    name = PurePosixPath(where).stem if isinstance(source, str) else source.stem
    # ASCII only: the run id names Redis keys and is checked like a job id (JOB_ID_PATTERN)
    stem = "".join(c if (c.isascii() and c.isalnum()) or c in "._-" else "-" for c in name)
    stem = stem[:40] or "batch"
    return f"{stem.lstrip('._-') or 'batch'}-{hashlib.sha256(described.encode()).hexdigest()[:8]}"


class DigestCache:
    """SHA-256 of files, remembered by (size, mtime) so a resumed run does not re-read them."""

    def __init__(self, files: RunFiles) -> None:
        self._files = files
        cached = files.read_json("digests.json")
        self._known: dict[str, list[Any]] = cached if isinstance(cached, dict) else {}
        self._dirty = False

    def sha256(self, path: Path) -> str:
        stat = path.stat()
        key = str(path)
        known = self._known.get(key)
        if known and known[0] == stat.st_size and known[1] == stat.st_mtime_ns:
            return str(known[2])
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(_HASH_BLOCK):
                digest.update(block)
        self._known[key] = [stat.st_size, stat.st_mtime_ns, digest.hexdigest()]
        self._dirty = True
        return digest.hexdigest()

    def save(self) -> None:
        if self._dirty:
            self._files.write_json("digests.json", self._known)


def estimate_calls(
    kind: str,
    *,
    size: int = 0,
    text: str = "",
    segments: bool = False,
    duration_s: float | None = None,
) -> tuple[int, float]:
    """(MiMo calls, seconds of audio) one item is expected to cost, for the ETA.

    ``duration_s`` is the recording's length when known (``probe_duration_s``); without it
    the size stands in, as if 16 kHz mono 16-bit WAV.
    """
    if kind == "speech":
        return max(1, math.ceil(len(text) / dc.MAX_SPEECH_CHARS)), 0.0
    audio_s = size / SPLIT_FORMAT.byte_rate if duration_s is None else duration_s
    if segments:
        return max(1, math.ceil(audio_s / SECONDS_PER_SEGMENT)), audio_s
    # A long recording is split into chunks of one call's bytes as it is (MP3, compact WAV),
    # or of 16 kHz mono once converted (larger WAV): whichever makes fewer.
    per_call_s = max_chunk_bytes("audio/wav") / SPLIT_FORMAT.byte_rate
    chunks = min(audio_s / per_call_s, size / max_chunk_bytes("audio/mpeg"))
    return max(1, math.ceil(chunks)), audio_s


def recording_output_key(prefix: str, relative: str, response_format: str) -> str:
    """The output key of the recording at ``relative``: ``prefix/relative.<format ext>``.

    The whole file name is kept (``day1/a.wav`` -> ``day1/a.wav.json``), so the name
    depends on nothing but the recording's own path: ``a.wav`` and ``a.mp3`` in one folder
    never share an output, whichever subset of the folder a run takes (``--glob``).
    """
    return f"{prefix}/{PurePosixPath(relative)}.{_ext(response_format)}"


def plan_directory(
    root: Path, options: BatchOptions, files: RunFiles, cache: DigestCache
) -> list[PlannedItem]:
    """Every audio file under ``root`` matching a pattern, in path order: transcription jobs
    whose outputs mirror the tree under the output prefix."""
    prefix = options.out_prefix or root.resolve().name or "batch"
    fmt = str(options.defaults.get("response_format") or "json")
    items: list[PlannedItem] = []
    for path in sorted(_matching(root, options.patterns)):
        relative = path.relative_to(root).as_posix()
        job: dict[str, Any] = {
            "kind": "transcription",
            **options.defaults,
            "file": str(path.resolve()),
        }
        job["output"] = recording_output_key(prefix, relative, fmt)
        try:
            digest = cache.sha256(path)
        except OSError as exc:
            items.append(PlannedItem(relative, None, f"cannot read {relative}: {exc.strerror}"))
            continue
        job["id"] = derive_job_id(job, digest)
        size = path.stat().st_size
        calls, audio_s = estimate_calls(
            "transcription", size=size, segments=job.get("timestamps") == "segment",
            duration_s=probe_duration_s(path),
        )  # fmt: skip
        item = PlannedItem(relative, job, calls=calls, audio_s=audio_s, content_sha256=digest)
        if path.suffix.lower() in CONVERTIBLE:
            item.convert_from = path
            job["file"] = str(files.path(f"converted/{digest[:32]}.wav"))
        items.append(item)
    return items


def plan_prefix(url: str, options: BatchOptions) -> list[PlannedItem]:
    """Every object under an ``s3://``/``gs://``/``az://`` prefix whose path below it matches
    a pattern, in path order: transcription jobs that name the object itself (any worker
    reads it from the store with ranged reads), outputs mirroring the prefix's tree.

    Objects are identified by URL, ETag and size (hashing them would mean downloading the
    whole archive), so a changed object is a new job and an unchanged one is not re-sent.
    """
    store, base = object_location(url, None, "source")
    base = base.strip("/")
    prefix = options.out_prefix or PurePosixPath(base).name or "batch"
    fmt = str(options.defaults.get("response_format") or "json")
    regexes = [glob_regex(p) for p in options.patterns]
    found: list[tuple[str, int, str]] = []
    try:
        pages = list(obstore.list(store, prefix=base + "/" if base else None))
    except BaseError as exc:  # no such bucket, no credentials, no network: say which
        raise InvalidRequestError(
            f"cannot list {url}: {type(exc).__name__}; check the URL and the AWS_*/GOOGLE_*/"
            "AZURE_* credentials of this process",
            param="source",
        ) from None
    for page in pages:
        for meta in page:
            relative = str(meta["path"])[len(base) :].lstrip("/") if base else str(meta["path"])
            hidden = any(part.startswith(".") for part in relative.split("/"))
            if relative and not hidden and any(r.fullmatch(relative) for r in regexes):
                found.append((relative, int(meta["size"]), str(meta.get("e_tag") or "")))
    root = url.rstrip("/")
    items: list[PlannedItem] = []
    for relative, size, etag in sorted(found):
        job: dict[str, Any] = {"kind": "transcription", **options.defaults}
        job["file"] = f"{root}/{relative}"
        job["output"] = recording_output_key(prefix, relative, fmt)
        identity = hashlib.sha256(f"{job['file']}\0{etag}\0{size}".encode()).hexdigest()
        job["id"] = derive_job_id(job, identity)
        calls, audio_s = estimate_calls(
            "transcription", size=size, segments=job.get("timestamps") == "segment"
        )
        items.append(PlannedItem(relative, job, calls=calls, audio_s=audio_s))
    return items


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob as a regex over ``/``-separated relative paths, case-insensitive: ``*`` and
    ``?`` stay within one folder, ``**/`` is any number of folders (none included)."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out, re.IGNORECASE)


def _matching(root: Path, patterns: Sequence[str]) -> Iterator[Path]:
    """Files whose path relative to ``root`` matches a pattern (recorders write .WAV as
    often as .wav, so case is ignored). Hidden files and folders (``.name``) are skipped:
    they hold caches and trash, not recordings."""
    regexes = [glob_regex(p) for p in patterns]
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if path.is_file() and not _hidden(relative):
            name = relative.as_posix()
            if any(r.fullmatch(name) for r in regexes):
                yield path


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def plan_manifest(path: Path, options: BatchOptions, cache: DigestCache) -> list[PlannedItem]:
    """One job per non-blank line of a JSONL file; relative ``file`` paths are relative to
    the manifest. A line without ``id`` gets a derived one; without ``output``, one under
    the output prefix named after the id."""
    prefix = options.out_prefix or path.stem
    items: list[PlannedItem] = []
    # utf-8-sig: a byte-order mark (Windows editors write one) is not part of line 1.
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            label = f"{path.name}:{number}"
            try:
                data = json.loads(line)
            except ValueError as exc:
                items.append(PlannedItem(label, None, f"line {number} is not JSON: {exc}"))
                continue
            if not isinstance(data, dict):
                items.append(PlannedItem(label, None, f"line {number} is not a JSON object"))
                continue
            if is_batch_line(data):  # an OpenAI Batch request line: its custom_id names it
                try:
                    label, data = job_from_batch_line(data)
                except InvalidRequestError as exc:
                    named = data.get("custom_id")
                    label = named if isinstance(named, str) and named else label
                    items.append(PlannedItem(label, None, f"line {number}: {exc.message}"))
                    continue
            items.append(
                _manifest_item(label, {**options.defaults, **data}, path.parent, prefix, cache)
            )
    return items


def _manifest_item(
    label: str, job: dict[str, Any], base: Path, prefix: str, cache: DigestCache
) -> PlannedItem:
    digest = None
    kind = job.get("kind")
    if (
        kind == "transcription"
        and isinstance(job.get("file"), str)
        and not job["file"].startswith("data:")
    ):
        ref = job["file"].removeprefix("file://")
        file = Path(ref).expanduser()
        file = file if file.is_absolute() else base / file
        job["file"] = str(file.resolve())
        try:
            digest = cache.sha256(file)
        except OSError as exc:
            return PlannedItem(label, None, f"file: cannot read {file}: {exc.strerror}")
    job.setdefault("id", derive_job_id(job, digest))
    if not job.get("output") and kind in ("speech", "transcription"):
        # Named after the id, so it adds nothing the id does not already pin down.
        fmt = job.get("response_format") or ("wav" if kind == "speech" else "json")
        job["output"] = f"{prefix}/{job['id']}.{_ext(str(fmt))}"
    if kind == "speech":
        calls, audio_s = estimate_calls("speech", text=str(job.get("input", "")))
    else:
        size = (
            Path(job["file"]).stat().st_size if digest else len(str(job.get("file", ""))) * 3 // 4
        )
        segments = job.get("timestamps") == "segment"
        calls, audio_s = estimate_calls("transcription", size=size, segments=segments)
    return PlannedItem(label, job, calls=calls, audio_s=audio_s)


def _ext(fmt: str) -> str:
    return {"text": "txt"}.get(fmt, fmt)


def plan_lines(path: Path, options: BatchOptions) -> list[PlannedItem]:
    """Texts to speak: every non-blank line of a text file, or every row of a CSV with a
    ``text`` (or ``input``) column; ``id``, ``output``, ``voice``, ``instructions`` and
    ``model`` columns, when present, override the defaults per row."""
    prefix = options.out_prefix or path.stem
    fmt = str(options.defaults.get("response_format") or "wav")
    rows = _csv_rows(path) if path.suffix.lower() == ".csv" else _text_rows(path)
    width = max(5, len(str(len(rows))))
    items: list[PlannedItem] = []
    for number, row in rows:
        label = f"{path.name}:{number}"
        text = row.get("text") or row.get("input") or ""
        if not text.strip():
            items.append(PlannedItem(label, None, f"line {number} has no text to speak"))
            continue
        job: dict[str, Any] = {"kind": "speech", **options.defaults, "input": text}
        job.update({k: v for k in ("voice", "instructions", "model", "id") if (v := row.get(k))})
        job["output"] = row.get("output") or f"{prefix}/{number:0{width}d}.{_ext(fmt)}"
        job.setdefault("id", derive_job_id(job))
        calls, _ = estimate_calls("speech", text=text)
        items.append(PlannedItem(label, job, calls=calls))
    return items


def _text_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    # utf-8-sig drops a leading byte-order mark, which would otherwise be spoken as part of
    # line 1; universal newlines read CRLF files (Windows) like LF ones.
    with open(path, encoding="utf-8-sig") as f:
        return [(n, {"text": line.rstrip("\r\n")}) for n, line in enumerate(f, 1) if line.strip()]


def _csv_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    # Excel's "CSV UTF-8" starts with a byte-order mark and ends lines with CRLF: utf-8-sig
    # drops the former (it would stick to the first column's name), the csv module reads
    # the latter.
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        names = {name.strip().lower() for name in reader.fieldnames or []}
        if not names & {"text", "input"}:
            raise ValueError(
                f"{path.name}: a CSV needs a 'text' column (found: {', '.join(sorted(names))})"
            )
        return [
            (reader.line_num, {k.strip().lower(): (v or "").strip() for k, v in row.items() if k})
            for row in reader
        ]


def plan(
    source: Path | str, kind: SourceKind, options: BatchOptions, files: RunFiles
) -> list[PlannedItem]:
    """The items of a run, in a stable order (the reports keep it)."""
    if kind == SourceKind.prefix:
        return plan_prefix(str(source), options)
    source = Path(source)
    cache = DigestCache(files)
    if kind == SourceKind.directory:
        items = plan_directory(source, options, files, cache)
    elif kind == SourceKind.manifest:
        items = plan_manifest(source, options, cache)
    else:
        items = plan_lines(source, options)
    cache.save()
    return items
