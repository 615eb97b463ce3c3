"""One trace per job across real processes, exported over OTLP/HTTP to a loopback receiver.

`mimoq worker` and `mimoq serve` run as processes with OTEL_* set; `mimoq speak` and
`mimoq batch` are run as commands; the receiver (tests/support/otlp.py) decodes what they
export with opentelemetry-proto. The mixed case: three models, both lanes, two tenants, a
job that fails, a job sent over HTTP with the caller's traceparent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mimoq.core.audio import WavFormat
from mimoq.sim.audio_gen import wav_header_with_text
from mimoq.sim.faults import Fault
from mimoq.sim.sim_server import RunningSim
from tests.conftest import RedisServer, free_port
from tests.e2e.conftest import API_KEY, WEBHOOK_SECRET
from tests.http.conftest import ALICE, stack_env, start_server, start_worker, stop
from tests.support.cli import mimoq
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.receiver import Receiver

pytestmark = [pytest.mark.redis, pytest.mark.slow]

CALLER = "00-5f3c8a2b9d1e4f6a8b7c6d5e4f3a2b1c-1a2b3c4d5e6f7a8b-01"
SEND, PROCESS = "send mimoq:queue", "process mimoq:queue"


class Trace:
    """The spans received, by job and by relation."""

    def __init__(self, spans: list[ReceivedSpan]) -> None:
        self.spans = spans

    def one(self, name: str, job_id: str) -> ReceivedSpan:
        [span] = [
            s
            for s in self.spans
            if s.name == name and s.attributes.get("messaging.message.id") == job_id
        ]
        return span

    def attempts(self, job_id: str) -> list[ReceivedSpan]:
        return [
            s
            for s in self.spans
            if s.name == PROCESS and s.attributes.get("messaging.message.id") == job_id
        ]

    def final(self, job_id: str) -> ReceivedSpan:
        """The attempt that finished the job (a loaded host may add a retry or a deferral)."""
        [span] = [
            a for a in self.attempts(job_id)
            if a.attributes.get("mimoq.job.outcome") in ("succeeded", "failed")
        ]  # fmt: skip
        return span

    def children(self, parent: ReceivedSpan) -> list[ReceivedSpan]:
        return [
            s
            for s in self.spans
            if s.parent_span_id == parent.span_id and s.trace_id == parent.trace_id
        ]

    def below(self, parent: ReceivedSpan) -> list[ReceivedSpan]:
        found = self.children(parent)
        for child in list(found):
            found += self.below(child)
        return found


def finished(trace_spans: list[ReceivedSpan], job_ids: list[str]) -> bool:
    done = {
        s.attributes.get("messaging.message.id")
        for s in trace_spans
        if s.name == PROCESS and s.attributes.get("mimoq.job.outcome") in ("succeeded", "failed")
    }
    return set(job_ids) <= done


@pytest.fixture
def stack(
    redis_server: RedisServer, sim: RunningSim, tmp_path: Path
) -> Iterator[tuple[dict[str, str], str, OtlpReceiver]]:
    import redis as sync_redis

    sync_redis.Redis.from_url(redis_server.url).flushall()
    with OtlpReceiver() as otlp:
        env = stack_env(
            redis_server, sim, tmp_path / "data",
            MIMO_API_KEY=API_KEY,
            MIMOQ_WEBHOOK_SECRET=WEBHOOK_SECRET,
            OTEL_EXPORTER_OTLP_ENDPOINT=otlp.url,
            OTEL_BSP_SCHEDULE_DELAY="100",  # export every 0.1 s, not every 5 s
        )  # fmt: skip
        port = free_port()
        worker = start_worker(env, tmp_path)
        server = start_server(env, tmp_path, port)
        try:
            yield env, f"http://127.0.0.1:{port}", otlp
        finally:
            stop(server)
            stop(worker)


def test_one_trace_per_job_across_cli_worker_mimo_callback_and_http(
    stack: tuple[dict[str, str], str, OtlpReceiver],
    sim: RunningSim,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    env, serve_url, otlp = stack
    sim.state.add_fault(
        Fault.model_validate({"kind": "status", "status": 400, "match": "FAIL-ME", "times": None})
    )

    # 1. `mimoq speak`, interactive, with a callback; it flushes its spans before it exits.
    spoken = mimoq("speak", "Hello across processes.", "--id", "traced-speak", "--callback",
                   receiver.url("/hook?token=cb-url-token"), "--wait", env=env, cwd=tmp_path)  # fmt: skip
    assert spoken.returncode == 0, spoken.stderr
    assert [s for s in otlp.spans if s.service == "mimoq-speak" and s.name == SEND], (
        "the CLI's PRODUCER span was exported before it exited"
    )

    # 2. `mimoq batch`: bulk lane, tenant team-b, two more models, one job that fails.
    recording = tmp_path / "hello.wav"
    samples = b"\x10\x00" * 16_000
    recording.write_bytes(
        wav_header_with_text(WavFormat(16_000, 1, 16), len(samples), "hi there") + samples
    )
    manifest = tmp_path / "jobs.jsonl"
    lines = [
        {"kind": "speech", "input": "A designed voice.", "model": "mimo-v2.5-tts-voicedesign",
         "instructions": "a calm, low voice"},
        {"kind": "transcription", "file": str(recording)},
        {"kind": "speech", "input": "FAIL-ME, please."},
    ]  # fmt: skip
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    batch = mimoq(
        "batch", str(manifest), "--tenant", "team-b", "--progress", "none", env=env, cwd=tmp_path
    )
    assert batch.returncode == 1, batch.stderr  # one item failed, as arranged

    # 3. `mimoq serve`: the caller's traceparent header is continued.
    answer = httpx.post(
        serve_url + "/v1/audio/speech",
        json={"model": "mimo-v2.5-tts", "input": "Over HTTP.", "voice": "mimo_default"},
        headers={
            "Authorization": f"Bearer {ALICE}",
            "Prefer": "respond-async",
            "traceparent": CALLER,
        },
        timeout=60,
    )
    assert answer.status_code == 202, answer.text
    http_job = answer.json()["id"]

    batch_sends = [s for s in otlp.spans if s.service == "mimoq-batch" and s.name == SEND]
    assert len(batch_sends) == 3
    batch_jobs = [str(s.attributes["messaging.message.id"]) for s in batch_sends]
    all_jobs = ["traced-speak", http_job, *batch_jobs]
    receiver.wait_for(1, timeout=60)
    otlp.wait_for(lambda spans: finished(spans, all_jobs), what="every job's final attempt span")
    otlp.wait_for(
        lambda spans: any(
            s.name == "POST callback" and s.attributes.get("http.response.status_code") == 200
            for s in spans
        ),
        what="the delivered callback's span",
    )
    # serve exports its own spans on its own schedule (and retries a slow receiver): wait for
    # its PRODUCER span rather than assume it came before the worker's last one
    otlp.wait_for(
        lambda spans: any(
            s.name == SEND and s.attributes.get("messaging.message.id") == http_job for s in spans
        ),
        what="serve's PRODUCER span of the HTTP job",
    )
    trace = Trace(otlp.spans)

    # The speak job: CLI producer → worker attempt → storage write → MiMo call; callback.
    send = trace.one(SEND, "traced-speak")
    process = trace.final("traced-speak")
    assert (send.service, send.kind, send.parent_span_id) == ("mimoq-speak", "PRODUCER", "")
    assert send.attributes["mimoq.lane"] == "interactive"
    assert (process.service, process.kind) == ("mimoq-worker", "CONSUMER")
    assert (process.trace_id, process.parent_span_id) == (send.trace_id, send.span_id)
    below = trace.below(process)
    [write] = [s for s in below if s.name == "storage write"]
    [call] = [s for s in below if s.name == "POST"]
    [delivery] = [
        s for s in below
        if s.name == "POST callback" and s.attributes.get("http.response.status_code") == 200
    ]  # fmt: skip
    assert call.parent_span_id == write.span_id and call.kind == "CLIENT"
    assert call.attributes["http.response.status_code"] == 200
    assert call.attributes["url.full"].endswith("/v1/chat/completions")
    assert delivery.parent_span_id == process.span_id
    # The receiver continues the same trace, from the callback span.
    sent = [r.headers["traceparent"].split("-")[1:3] for r in receiver.requests]
    assert [send.trace_id, delivery.span_id] in sent

    # The batch: bulk lane, its tenant, three models, each its own trace; one failed.
    models = set()
    for job_id, producer_span in zip(batch_jobs, batch_sends, strict=True):
        assert producer_span.attributes["mimoq.lane"] == "bulk"
        assert producer_span.attributes["mimoq.tenant"] == "team-b"
        final = trace.final(job_id)
        assert (final.trace_id, final.parent_span_id) == (
            producer_span.trace_id,
            producer_span.span_id,
        )
        assert final.attributes["mimoq.tenant"] == "team-b"
        assert any(s.name == "POST" for s in trace.below(final))
        models.add(final.attributes["mimoq.model"])
        if final.attributes["mimoq.job.outcome"] == "failed":
            assert final.status_code == 2 and final.attributes["error.type"]
            [failed_call] = [s for s in trace.below(final) if s.name == "POST"]
            assert failed_call.attributes["http.response.status_code"] == 400
            assert failed_call.status_code == 2
    assert models == {"mimo-v2.5-tts-voicedesign", "mimo-v2.5-asr", "mimo-v2.5-tts"}
    assert (
        sum(
            a.attributes.get("mimoq.job.outcome") == "failed"
            for j in batch_jobs
            for a in trace.attempts(j)
        )
        == 1
    )
    assert len({s.trace_id for s in batch_sends}) == 3

    # The HTTP job continues the caller's trace: serve's PRODUCER span is the caller's child.
    http_send = trace.one(SEND, http_job)
    assert http_send.service == "mimoq-serve"
    assert (http_send.trace_id, http_send.parent_span_id) == tuple(CALLER.split("-")[1:3])
    assert http_send.attributes["mimoq.tenant"] == "alice"
    http_process = trace.final(http_job)
    assert (http_process.trace_id, http_process.parent_span_id) == (
        http_send.trace_id,
        http_send.span_id,
    )

    # No secret anywhere: MiMo key, webhook secret, the caller's bearer token, the callback URL's token.
    text = json.dumps([vars(s) for s in otlp.spans], default=str)
    for secret in (API_KEY, WEBHOOK_SECRET.removeprefix("whsec_"), ALICE, "cb-url-token"):
        assert secret not in text
    services = {s.service for s in otlp.spans}
    assert services >= {"mimoq-speak", "mimoq-batch", "mimoq-worker", "mimoq-serve"}
