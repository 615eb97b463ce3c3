"""``mimoq worker`` and ``mimoq sim``: the long-running processes."""

from __future__ import annotations

import argparse
from typing import Any

from mimoq.core.errors import ConfigurationError
from mimoq.core.settings import Settings


def register(sub: Any) -> None:
    worker = sub.add_parser("worker", help="run a worker on REDIS_URL (any number, on any hosts)")
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    worker.add_argument(
        "--concurrency", type=int, metavar="N", help="jobs in flight (MIMOQ_CONCURRENCY)"
    )
    worker.add_argument(
        "--metrics-port", type=int, metavar="PORT",
        help="serve /metrics and /healthz here, 0 for none (MIMOQ_METRICS_PORT, default 9464)",
    )  # fmt: skip
    worker.set_defaults(func=_worker, log_level="INFO")

    from mimoq.sim.sim_config import add_arguments

    sim = sub.add_parser("sim", help="serve the MiMo simulator on loopback (no key needed)")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8808)
    add_arguments(sim)
    sim.set_defaults(func=_sim, log_level="INFO")


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from mimoq.cli.producer_session import require_key
    from mimoq.worker.arq_worker import build_worker

    if args.concurrency is not None:
        settings = settings.updated(worker={"concurrency": args.concurrency})
    if args.metrics_port is not None:
        settings = settings.updated(ops={"metrics_port": args.metrics_port})
    if not settings.redis_url:
        raise ConfigurationError(
            "mimoq worker needs REDIS_URL (a Redis shared with the producers); on one machine "
            "without a server, `mimoq speak` and `mimoq transcribe` run an embedded worker"
        )
    require_key(settings, calls_mimo=True)
    # SIGTERM: no new jobs, running ones get MIMOQ_SHUTDOWN_GRACE_S, then exit 0.
    build_worker(settings, burst=args.burst, metrics_port=settings.ops.metrics_port or None).run()
    return 0


def _sim(args: argparse.Namespace, settings: Settings) -> int:
    from mimoq.sim.sim_config import config_from_args
    from mimoq.sim.sim_server import serve_sim

    serve_sim(config_from_args(args), args.host, args.port)
    return 0
