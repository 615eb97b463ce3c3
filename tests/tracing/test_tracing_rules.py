"""Tracing's rules without services: when it turns on, what a traceparent is, URL redaction."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mimoq.core import tracing
from mimoq.core.errors import ConfigurationError, InvalidRequestError
from mimoq.core.jobs import parse_job
from tests.support.cli import ROOT

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (VALID, True),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", True),  # not sampled
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", False),  # upper case
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", False),  # zero trace id
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", False),  # zero span id
        ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", False),  # other version
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", False),  # no flags
        (VALID + "\n", False),
        ("", False),
        (None, False),
        (42, False),
    ],
)
def test_traceparent_is_w3c_version_00(value: object, ok: bool) -> None:
    assert tracing.valid_traceparent(value) is ok


def test_a_job_carries_a_valid_traceparent() -> None:
    job = parse_job({"kind": "speech", "input": "hi", "traceparent": VALID})
    assert job.traceparent == VALID


def test_a_malformed_traceparent_is_refused_naming_the_field_and_the_form() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_job({"kind": "speech", "input": "hi", "traceparent": "00-abc-def-01"})
    assert caught.value.param == "traceparent"
    assert "W3C traceparent" in caught.value.message
    assert "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" in caught.value.message


@pytest.mark.parametrize(
    ("env", "exporters"),
    [
        ({}, ()),
        ({"OTEL_SERVICE_NAME": "x"}, ()),  # a name alone turns nothing on
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "console"}, ("console",)),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, ("otlp", "console")),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, ()),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, ()),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            },
            ("otlp",),
        ),
    ],
)
def test_tracing_is_on_only_when_otel_variables_ask(
    env: dict[str, str], exporters: tuple[str, ...]
) -> None:
    assert tracing.exporters_from_env(env) == exporters


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "4318",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"},
            "http/protobuf",
        ),
    ],
)
def test_what_mimoq_cannot_export_stops_start_up_with_the_fix(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        tracing.exporters_from_env(env)
    assert named in caught.value.message


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        (
            "https://api.xiaomimimo.com/v1/chat/completions",
            "https://api.xiaomimimo.com/v1/chat/completions",
        ),
        ("https://user:sk-secret@mimo.example/v1?key=sk-secret#frag", "https://mimo.example/v1"),
        (
            "http://127.0.0.1:8080/v1/chat/completions?api_key=sk-x",
            "http://127.0.0.1:8080/v1/chat/completions",
        ),
        ("http://[::1]:9/v1", "http://[::1]:9/v1"),
    ],
)
def test_span_urls_lose_userinfo_query_and_fragment(url: str, safe: str) -> None:
    assert tracing.safe_url(url) == safe


def test_off_the_sdk_is_never_imported_and_helpers_build_nothing() -> None:
    """A producer and a worker module loaded, a job enqueued through every helper, with no
    OTEL_* set: the SDK stays unimported (the API's context is all that runs)."""
    code = """
import sys
from mimoq.core import tracing
import mimoq.cli, mimoq.worker.arq_worker, mimoq.producer.client, mimoq.http.app
assert not tracing.setup_from_env("mimoq-test", env={})
with tracing.producer_span({"id": "j"}, destination="q") as enq:
    assert enq.traceparent is None and enq.span is None
with tracing.attempt_span("j", {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, "speech", destination="q", arq_try=1):
    assert tracing.current_traceparent() == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with tracing.mimo_call_span("http://x/v1") as call:
        call.answered(200)
assert tracing.current_traceparent() is None
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry.sdk") or m.startswith("opentelemetry.exporter"))
print(loaded)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert out.stdout.strip() == "[]", out.stderr
