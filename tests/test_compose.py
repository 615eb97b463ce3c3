"""docker-compose.yml is for users (no Docker engine here): check it as data."""

from __future__ import annotations

from pathlib import Path

import yaml

from mimoq.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


def load() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_redis_persists_with_aof() -> None:
    redis = load()["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in redis["volumes"])
    assert "healthcheck" in redis


def test_worker_is_scaled_by_replicas_and_waits_for_redis() -> None:
    worker = load()["services"]["worker"]
    assert worker["deploy"]["replicas"] >= 2
    assert worker["environment"]["REDIS_URL"].startswith("redis://redis:6379")
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert worker["environment"]["MIMOQ_DATA_DIR"] == "/data"
    # The command is one our CLI accepts.
    assert build_parser().parse_args(worker["command"][1:]).command == "worker"


def test_simulator_sits_behind_a_profile() -> None:
    sim = load()["services"]["sim"]
    assert sim["profiles"] == ["sim"]
    args = build_parser().parse_args(sim["command"][1:])
    assert (args.command, args.host, args.port) == ("sim", "0.0.0.0", 8808)


def test_every_service_image_can_be_built() -> None:
    services = load()["services"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert all(
        "build" in s or s.get("image") == "mimoq:latest"
        for n, s in services.items()
        if n not in ("redis", "s3")  # third-party images: Redis, SeaweedFS
    )
    for package in ("mimoq", "producer", "worker"):
        assert f"COPY {package} " in dockerfile
    assert set(load()["volumes"]) == {"redis-data", "mimoq-data", "s3-data"}


def test_worker_health_is_checked_with_our_own_command() -> None:
    worker = load()["services"]["worker"]
    test = worker["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL" and test[1].startswith("mimoq health ")
    args = build_parser().parse_args(["health", "--host", "worker-1"])
    assert args.command == "health"
    assert "9464" in worker["expose"]


def test_serve_listens_publicly_only_with_tokens() -> None:
    serve = load()["services"]["serve"]
    args = build_parser().parse_args(serve["command"][1:])
    assert (args.command, args.host, args.port) == ("serve", "0.0.0.0", 8080)
    # Public binding without a token is refused by the server; compose insists on one too.
    assert serve["environment"]["MIMOQ_API_TOKENS"].startswith("${MIMOQ_API_TOKENS:?")
    assert serve["environment"]["MIMOQ_DATA_DIR"] == "/data"
    assert "mimoq-data:/data" in serve["volumes"]
    # mimoq_desired_workers on serve's /metrics: the workers' account and concurrency
    worker = load()["services"]["worker"]
    for name in ("MIMO_API_KEY", "MIMOQ_CONCURRENCY"):
        assert serve["environment"][name] == worker["environment"][name]
    assert serve["environment"]["MIMOQ_METRICS_TOKEN"] == "${MIMOQ_METRICS_TOKEN:-}"


def test_s3_profile_runs_workers_with_no_shared_disk() -> None:
    """`--profile s3`: an S3 server, and workers pointed at it that mount no data volume."""
    import json

    from mimoq.core.settings import Settings

    compose = load()
    services = compose["services"]
    s3, worker = services["s3"], services["worker-s3"]
    assert s3["profiles"] == worker["profiles"] == ["s3"]
    assert "-s3" in s3["command"] and "-s3.port=8333" in s3["command"]
    env = worker["environment"]
    assert env["AWS_ENDPOINT"] == "http://s3:8333" and env["AWS_ALLOW_HTTP"] == "true"
    assert "volumes" not in worker and "MIMOQ_DATA_DIR" not in env
    assert worker["depends_on"]["s3"]["condition"] == "service_healthy"
    settings = Settings(storage={"url": env["MIMOQ_STORAGE_URL"]})  # a URL the worker accepts
    assert settings.storage.location() == "s3://mimoq/fleet"
    assert build_parser().parse_args(worker["command"][1:]).command == "worker"
    # The identity file is valid JSON once compose substitutes the defaults.
    content = compose["configs"]["s3-identities"]["content"]
    content = content.replace("${AWS_ACCESS_KEY_ID:-mimoq}", "mimoq").replace(
        "${AWS_SECRET_ACCESS_KEY:-change-me-mimoq-secret}", "secret"
    )
    identity = json.loads(content)["identities"][0]
    assert "Admin" in identity["actions"]
    assert [c["target"] for c in s3["configs"]] == ["/etc/seaweedfs/identities.json"]
