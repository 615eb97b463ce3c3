"""The quota bench's processes: `mimoq worker` fleets on the shared services, stopped together."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from _support import STOP_TIMEOUT_S, Service, Services, wait_until

#: A worker is ready once it logged this (JSON logs: stderr is not a terminal).
STARTED = b'"event": "worker.started"'
#: arq's and mimoq's default backoff is sized for MiMo's one-minute window; the bench
#: compresses time by window_s / 60 and scales the backoff with it.
REAL_WINDOW_S = 60.0
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 300.0
WORKER_START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class FleetSpec:
    """What every worker of one scenario is started with."""

    redis_url: str
    mimo_base_url: str
    data_dir: Path
    window_s: float
    concurrency: int
    poll_delay_s: float
    limits: bool
    #: further MIMOQ_* settings of this scenario (the bench's own knobs)
    extra_env: tuple[tuple[str, str], ...] = ()

    def env(self) -> dict[str, str]:
        """The worker's environment: this process's, minus any mimoq/MiMo settings, plus ours."""
        mine = ("MIMOQ_", "MIMO_", "XIAOMI_", "REDIS_URL")
        env = {k: v for k, v in os.environ.items() if not k.startswith(mine)}
        scale = self.window_s / REAL_WINDOW_S
        env.update(
            REDIS_URL=self.redis_url,
            MIMO_BASE_URL=self.mimo_base_url,
            MIMOQ_DATA_DIR=str(self.data_dir),
            # the ASR clip lives in the run's folder, beside every scenario's data dir
            MIMOQ_INPUT_ROOTS=str(self.data_dir.parent),
            MIMOQ_LIMITS_ENABLED=str(self.limits).lower(),
            MIMOQ_LIMIT_WINDOW_S=f"{self.window_s:g}",
            MIMOQ_CONCURRENCY=str(self.concurrency),
            MIMOQ_POLL_DELAY_S=f"{self.poll_delay_s:g}",
            MIMOQ_BACKOFF_BASE_S=f"{BACKOFF_BASE_S * scale:g}",
            MIMOQ_BACKOFF_MAX_S=f"{BACKOFF_MAX_S * scale:g}",
            MIMOQ_METRICS_PORT="0",  # several workers on one host: no /metrics port clash
            MIMOQ_SHUTDOWN_GRACE_S="1",
        )
        env.update(self.extra_env)
        return env


class Fleet(Services):
    """``Services`` that can also start ``mimoq worker`` processes."""

    def __enter__(self) -> Fleet:
        return self

    def worker(self, name: str, spec: FleetSpec) -> Service:
        """Start one worker; returns once it logged ``worker.started``."""
        argv = [sys.executable, "-m", "mimoq.cli", "worker"]
        service = self._spawn(name, argv, spec.redis_url, spec.env())

        def started() -> bool:
            try:
                return STARTED in service.log.read_bytes()
            except OSError:
                return False

        try:
            wait_until(started, what=name, alive=service.alive, timeout_s=WORKER_START_TIMEOUT_S)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{service.log_tail()}") from None
        return service

    def workers(self, count: int, spec: FleetSpec, prefix: str) -> list[Service]:
        """``count`` workers started one after another (each waits for the last to be up)."""
        return [self.worker(f"{prefix}-{i}", spec) for i in range(count)]


def stop_all(services: Sequence[Service]) -> None:
    """SIGTERM every one first (they drain in parallel), then wait; SIGKILL stragglers."""
    running = [s for s in services if s.alive()]
    for service in running:
        service.process.terminate()
    for service in running:
        try:
            service.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait()
