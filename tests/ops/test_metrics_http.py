"""worker.metrics_http: /metrics from the registry, /healthz from the liveness verdict, over HTTP."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from mimoq.core.errors import ConfigurationError
from mimoq.worker.heartbeat import Liveness, LivenessStatus
from mimoq.worker.metrics_http import MetricsServer

LIVE = Liveness(True, LivenessStatus.ok, "w-1", False, 0.5)
STALLED = Liveness(False, LivenessStatus.stalled, "w-1", False, 40.0)


class Verdict:
    """A liveness source the test can switch."""

    def __init__(self) -> None:
        self.current = LIVE

    def __call__(self) -> Liveness:
        return self.current


@pytest.fixture
def verdict() -> Verdict:
    return Verdict()


@pytest.fixture
def server(verdict: Verdict) -> Iterator[MetricsServer]:
    running = MetricsServer.start("127.0.0.1", 0, liveness=verdict)
    yield running
    running.stop()


def url(server: MetricsServer, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


def test_port_zero_binds_a_free_port(server: MetricsServer) -> None:
    assert server.port > 0 and server.host == "127.0.0.1"


@pytest.mark.parametrize("path", ["/metrics", "/"])
def test_metrics_are_prometheus_text(server: MetricsServer, path: str) -> None:
    response = httpx.get(url(server, path))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE mimoq_jobs_total counter" in response.text
    assert "# TYPE mimoq_mimo_request_duration_seconds histogram" in response.text
    assert "process_cpu_seconds_total" in response.text  # the default collectors come along


@pytest.mark.parametrize(
    ("state", "code"), [(LIVE, 200), (STALLED, 503),
                        (Liveness(False, LivenessStatus.starting, "w-1", False, None), 503)]
)  # fmt: skip
def test_healthz_follows_the_liveness_verdict(
    server: MetricsServer, verdict: Verdict, state: Liveness, code: int
) -> None:
    verdict.current = state
    response = httpx.get(url(server, "/healthz"))
    assert response.status_code == code
    assert response.json() == {
        "ok": state.ok, "status": state.status.value, "worker_id": "w-1",
        "draining": state.draining, "last_beat_age_s": state.last_beat_age_s,
    }  # fmt: skip


def test_unknown_path_is_404(server: MetricsServer) -> None:
    assert httpx.get(url(server, "/admin")).status_code == 404


def test_port_in_use_is_a_configuration_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError, match="MIMOQ_METRICS_PORT"):
            MetricsServer.start("127.0.0.1", port, liveness=Verdict())


def test_stop_releases_the_port(verdict: Verdict) -> None:
    first = MetricsServer.start("127.0.0.1", 0, liveness=verdict)
    port = first.port
    first.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz")
    again = MetricsServer.start("127.0.0.1", port, liveness=verdict)  # the port is free again
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    finally:
        again.stop()
