"""``mimoq speak``, ``mimoq transcribe`` and ``mimoq status``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from mimoq.cli.producer_session import Session, open_session
from mimoq.core import dialect_constants as dc
from mimoq.core.connections import connect
from mimoq.core.errors import InvalidRequestError
from mimoq.core.fetching import download_output
from mimoq.core.jobs import CallbackStatus, JobResult
from mimoq.core.objstore import open_storage
from mimoq.core.results import job_status
from mimoq.core.settings import Settings

#: How long the embedded default keeps its in-process worker up for a pending callback.
EMBEDDED_CALLBACK_WAIT_S = 30.0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--callback", metavar="URL", help="POST the result here when done")
    parser.add_argument("--id", help="job id; also the idempotency key (default: random)")
    parser.add_argument("--metadata", metavar="JSON", help="opaque JSON echoed in the result")
    parser.add_argument("--output", metavar="KEY", help="output path relative to MIMOQ_DATA_DIR")
    parser.add_argument("--wait", action="store_true", help="wait and print the final result")
    parser.add_argument(
        "--timeout", type=float, default=None, metavar="S", help="give up waiting after S seconds"
    )


def register(sub: Any) -> None:
    speak = sub.add_parser("speak", help="text to speech")
    speak.add_argument("text", help="the text to speak")
    speak.add_argument(
        "--voice", help=f"preset ({', '.join(dc.PRESET_VOICES)}) or, for voiceclone, a sample"
    )
    speak.add_argument("--instructions", help="style; for voicedesign the voice description")
    speak.add_argument(
        "--model", default=dc.TTS_MODEL, choices=[*dc.SPEECH_MODELS, *dc.MODEL_ALIASES]
    )
    speak.add_argument("--format", dest="response_format", default="wav", help="wav or pcm")
    speak.add_argument(
        "--out", type=Path, help="also copy the finished audio here (implies --wait)"
    )
    _common(speak)
    speak.set_defaults(func=_speak)

    transcribe = sub.add_parser("transcribe", help="speech to text")
    transcribe.add_argument("file", help="a .wav or .mp3 file")
    transcribe.add_argument("--language", default="auto", help="auto, zh or en")
    transcribe.add_argument(
        "--format", dest="response_format", default="json",
        help="json or text; srt or vtt with --segments",
    )  # fmt: skip
    transcribe.add_argument("--temperature", type=float)
    add_audio_options(transcribe)
    _common(transcribe)
    transcribe.set_defaults(func=_transcribe, out=None)

    status = sub.add_parser("status", help="a job's state and, once done, its result")
    status.add_argument("id")
    status.set_defaults(func=_status)


def add_audio_options(parser: argparse.ArgumentParser) -> None:
    """``--segments`` and ``--compact-silence``: the transcription options that cut audio."""
    parser.add_argument(
        "--segments", action="store_true",
        help="split at pauses into utterances (<= 30 s), each with its start and end time "
        "(more requests, no more audio)",
    )  # fmt: skip
    parser.add_argument(
        "--compact-silence", action="store_true",
        help="shorten pauses over 1 s to 0.3 s before upload: less audio billed",
    )  # fmt: skip


def audio_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The job fields ``add_audio_options`` set (none when not given)."""
    fields: dict[str, Any] = {}
    if getattr(args, "segments", False):
        fields["timestamps"] = "segment"
    if getattr(args, "compact_silence", False):
        fields["compact_silence"] = True
    return fields


def _job(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    job: dict[str, Any] = {"kind": kind, "response_format": args.response_format}
    if kind == "speech":
        job.update(
            input=args.text, model=args.model, voice=args.voice, instructions=args.instructions
        )
    else:
        job.update(file=args.file, language=args.language, temperature=args.temperature)
        job.update(audio_fields(args))
    job.update(id=args.id, output=args.output)
    if args.callback:
        job["callback"] = {"url": args.callback}
    if args.metadata is not None:
        try:
            job["metadata"] = json.loads(args.metadata)
        except ValueError:
            raise InvalidRequestError("--metadata must be JSON", param="metadata") from None
    return {k: v for k, v in job.items() if v is not None}


def _speak(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_submit(settings, _job(args, "speech"), args))


def _transcribe(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_submit(settings, _job(args, "transcription"), args))


def _print(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")


async def _settled(session: Session, result: JobResult, wait_s: float) -> JobResult:
    """In embedded mode, give a pending callback a bounded chance before the process exits."""
    deadline = time.monotonic() + wait_s
    while result.callback.status == CallbackStatus.pending and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        result = await session.producer.result(result.id) or result
    if result.callback.status == CallbackStatus.pending:
        print(
            "mimoq: warning: the callback was not delivered before exit (embedded mode keeps "
            "no queue after the process ends); the result above is the record",
            file=sys.stderr,
        )
    return result


async def _submit(settings: Settings, job: dict[str, Any], args: argparse.Namespace) -> int:
    async with open_session(settings) as session:
        enqueued = await session.producer.enqueue(job)
        wait = args.wait or args.out is not None or session.embedded
        if not wait:
            _print({"id": enqueued.job_id, "status": "queued" if enqueued.created else "duplicate"})
            return 0
        try:
            result = await session.producer.wait(enqueued.job_id, timeout_s=args.timeout)
        except TimeoutError as exc:
            print(f"mimoq: timeout: {exc}", file=sys.stderr)
            return 3
        if session.embedded:
            result = await _settled(session, result, EMBEDDED_CALLBACK_WAIT_S)
    _print(result.model_dump(mode="json"))
    if result.status != "succeeded":
        return 1
    return _copy_out(args, result, settings)


def _copy_out(args: argparse.Namespace, result: JobResult, settings: Settings) -> int:
    """``--out``: download the finished audio where the user asked, from wherever it is."""
    if args.out is not None and result.output is not None:
        storage = open_storage(settings)
        url = result.output.url or storage.url(result.output.key)
        try:
            download_output(url, args.out, storage)
        except FileNotFoundError:
            print(
                f"mimoq: --out: {url} is not reachable from this machine (it is on the "
                "worker's disk: share storage with MIMOQ_STORAGE_URL)",
                file=sys.stderr,
            )
            return 1
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> int:
        redis = connect(settings)  # the embedded default keeps no state between runs
        try:
            report = await job_status(redis, args.id)
        finally:
            await redis.aclose()
        _print(report.to_dict())
        return 1 if report.status == "not_found" else 0

    return asyncio.run(run())
