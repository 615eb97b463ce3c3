"""No CORS headers unless origins are configured; then only for those origins."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from mimoq.core.settings import Settings
from mimoq.http.app import build_app
from mimoq.http.auth import TokenTable
from tests.conftest import RedisServer

pytestmark = [pytest.mark.redis]

PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization",
}


def client(redis_server: RedisServer, tmp_path: Path, origins: str) -> TestClient:
    settings = Settings(
        redis_url=redis_server.url, storage={"data_dir": tmp_path}, http={"cors_origins": origins}
    )
    return TestClient(build_app(settings, TokenTable(["t" * 20])))


def test_no_cors_by_default(redis_server: RedisServer, tmp_path: Path) -> None:
    with client(redis_server, tmp_path, "") as http:
        answer = http.options(
            "/v1/audio/speech", headers={"Origin": "https://app.example", **PREFLIGHT}
        )
        assert "access-control-allow-origin" not in answer.headers
        got = http.get("/healthz", headers={"Origin": "https://app.example"})
        assert "access-control-allow-origin" not in got.headers


def test_configured_origins_only(redis_server: RedisServer, tmp_path: Path) -> None:
    with client(redis_server, tmp_path, "https://app.example") as http:
        ok = http.options(
            "/v1/audio/speech", headers={"Origin": "https://app.example", **PREFLIGHT}
        )
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        other = http.options(
            "/v1/audio/speech", headers={"Origin": "https://evil.example", **PREFLIGHT}
        )
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"
        async_answer = http.get("/healthz", headers={"Origin": "https://app.example"})
        assert async_answer.headers["access-control-allow-origin"] == "https://app.example"


def test_preflight_allows_trace_context_and_idempotency_key(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A browser that sends W3C trace context or an Idempotency-Key asks for them in the
    preflight; a header missing from the allow list fails the preflight with 400."""
    asked = "authorization, content-type, traceparent, tracestate, idempotency-key"
    with client(redis_server, tmp_path, "https://app.example") as http:
        answer = http.options(
            "/v1/audio/speech",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": asked,
            },
        )
        assert answer.status_code == 200, answer.text
        allowed = {
            h.strip().lower() for h in answer.headers["access-control-allow-headers"].split(",")
        }
        assert {"traceparent", "tracestate", "idempotency-key"} <= allowed
