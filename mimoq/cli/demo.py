"""``mimoq demo``: the whole pipeline on one machine, with no key and no Redis server.

Starts the simulator as MiMo, synthesizes a few sentences and transcribes them back
through the embedded default (in-process Redis stand-in and worker), receives the
signed callbacks on a loopback receiver, and prints what happened.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import secrets
import threading
from base64 import b64encode
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from mimoq.cli.producer_session import open_session
from mimoq.core.jobs import AudioOutput, JobResult
from mimoq.core.settings import Settings
from mimoq.core.webhooks import signature

SENTENCES = (
    ("Mia", "Hello from mimoq, the queue for MiMo audio."),
    ("Dean", "Every job becomes a file, a result and a signed callback."),
    ("冰糖", "你好，这是一段测试语音。"),
)


def register(sub: Any) -> None:
    demo = sub.add_parser("demo", help="run the pipeline end to end against the simulator")
    demo.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where outputs go (default: MIMOQ_DATA_DIR/demo)",
    )
    demo.set_defaults(func=_demo)


class _Inbox:
    """Callbacks received by the demo's loopback receiver, with their signature checked."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.received: dict[str, bool] = {}  # job id -> signature valid
        self.cond = threading.Condition()

    def record(self, headers: dict[str, str], body: bytes) -> None:
        expected = signature(
            [self.secret],
            headers.get("webhook-id", ""),
            int(headers.get("webhook-timestamp", "0")),
            body,
        )
        valid = hmac.compare_digest(expected, headers.get("webhook-signature", ""))
        with self.cond:
            self.received[json.loads(body)["job_id"]] = valid
            self.cond.notify_all()


@contextmanager
def _receiver(inbox: _Inbox) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            inbox.record({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/callbacks"
    finally:
        server.shutdown()
        server.server_close()


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from mimoq.sim.sim_config import SimConfig
    from mimoq.sim.sim_server import start_in_thread

    data_dir = args.data_dir or Path(settings.storage.data_dir) / "demo"
    secret = "whsec_" + b64encode(secrets.token_bytes(24)).decode()
    inbox = _Inbox(secret)
    with start_in_thread(SimConfig()) as sim, _receiver(inbox) as callback_url:
        demo_settings = Settings(
            mimo={"base_url": sim.url},
            redis_url=None,
            storage={"data_dir": data_dir},
            callbacks={"secret": secret, "allow_networks": "127.0.0.0/8"},
            worker={"poll_delay_s": 0.02},
        )
        results = asyncio.run(_run(demo_settings, callback_url, inbox))
    return _report(results, inbox)


def _wait_for_callbacks(inbox: _Inbox, count: int, timeout_s: float) -> None:
    with inbox.cond:
        inbox.cond.wait_for(lambda: len(inbox.received) >= count, timeout=timeout_s)


async def _run(settings: Settings, callback_url: str, inbox: _Inbox) -> list[JobResult]:
    async with open_session(settings) as session:
        producer = session.producer
        speech_ids = [
            (
                await producer.enqueue(
                    {
                        "kind": "speech",
                        "input": text,
                        "voice": voice,
                        "callback": {"url": callback_url},
                    }
                )
            ).job_id
            for voice, text in SENTENCES
        ]
        spoken = [await producer.wait(job_id, timeout_s=60) for job_id in speech_ids]
        heard_ids = [
            (
                await producer.enqueue(
                    {
                        "kind": "transcription",
                        "file": r.output.path,
                        "callback": {"url": callback_url},
                    }
                )
            ).job_id
            for r in spoken
            if r.output is not None
        ]
        heard = [await producer.wait(job_id, timeout_s=60) for job_id in heard_ids]
        # Callbacks are jobs of their own: keep the in-process worker up until they land.
        await asyncio.to_thread(_wait_for_callbacks, inbox, len(spoken) + len(heard), 30.0)
    return spoken + heard


def _describe(result: JobResult) -> str:
    if isinstance(result.output, AudioOutput):
        out = result.output
        return f"{out.path}  ({out.duration_s:.2f} s, {out.sample_rate} Hz)"
    if result.status == "succeeded":
        return result.text or ""
    return str((result.error or {}).get("message"))


def _report(results: list[JobResult], inbox: _Inbox) -> int:
    ok = True
    print(f"{'kind':<14}{'status':<11}{'callback':<18}output / transcript")
    for r in results:
        signed = inbox.received.get(r.id)
        callback = {True: "signed ✓", False: "BAD SIGNATURE", None: "not received"}[signed]
        print(f"{r.kind or '?':<14}{r.status:<11}{callback:<18}{_describe(r)}")
        ok = ok and r.status == "succeeded" and bool(signed)
    heard = [r.text for r in results if r.kind == "transcription"]
    round_trip = heard == [text for _, text in SENTENCES]
    print(f"\nround trip (speech → transcript matches the text): {'yes' if round_trip else 'NO'}")
    return 0 if ok and round_trip else 1
