"""deploy/kubernetes/ is for users (no cluster here): check it as data, against schemas.

Every manifest goes through ``kubernetes-validate --strict`` (Kubernetes' own OpenAPI
schemas; strict refuses unknown fields, so a typo such as ``livenesProbe`` fails). That
tool has no schema for custom resources: it only warns and passes them. The KEDA resources
are therefore checked here against a schema of our own (the ScaledObject and
TriggerAuthentication fields of KEDA's v1alpha1 CRDs that these manifests use, with unknown
fields refused the same way), and the test insists that those two kinds are the only ones
the tool skipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from mimoq.cli import build_parser
from mimoq.core.settings import Settings
from mimoq.worker import metrics
from tests.test_docs import env_names

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
#: kinds kubernetes-validate has no schema for; checked against KEDA_SCHEMAS below
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication"}


def manifests() -> list[Path]:
    return sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")


def resources() -> dict[tuple[str, str], dict[str, Any]]:
    """Every resource of every manifest, by (kind, name)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in manifests():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def kubernetes_validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    tool = Path(sys.executable).parent / "kubernetes-validate"
    if not tool.exists():
        tool = Path(shutil.which("kubernetes-validate") or "kubernetes-validate")
    return subprocess.run(
        [str(tool), "--strict", *map(str, paths)], capture_output=True, text=True, timeout=120
    )


def test_every_manifest_passes_kubernetes_validate_strict() -> None:
    result = kubernetes_validate(*manifests())
    assert result.returncode == 0, result.stdout + result.stderr
    passed = set(re.findall(r"passed for resource (\S+) against", result.stdout))
    skipped = set(re.findall(r"schema for kind (\S+) with api version", result.stdout))
    expected = {f"{kind.lower()}/{name}" for kind, name in resources() if kind not in CUSTOM_KINDS}
    assert passed == expected
    assert skipped == CUSTOM_KINDS  # and nothing else went unchecked


def test_strict_validation_refuses_an_unknown_field(tmp_path: Path) -> None:
    """The check above can fail: a misspelt probe is refused, not ignored."""
    text = (
        (DEPLOY / "worker-deployment.yaml").read_text().replace("livenessProbe:", "livenesProbe:")
    )
    broken = tmp_path / "worker.yaml"
    broken.write_text(text)
    result = kubernetes_validate(broken)
    assert result.returncode != 0 and "livenesProbe" in result.stdout


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in manifests()]
    namespaces = {
        r["metadata"].get("namespace", r["metadata"]["name"]) for r in resources().values()
    }
    assert namespaces == {kustomization["namespace"]}


# --- KEDA: our schema of the fields used, unknown fields refused ------------------------------

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_META = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                   "labels": _STRING_MAP, "annotations": _STRING_MAP},
    "additionalProperties": False,
}  # fmt: skip
SCALED_OBJECT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": _META,
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string"},
                        "kind": {"type": "string"},
                        "apiVersion": {"type": "string"},
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "advanced": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string"},
                                "behavior": {"type": "object"},
                            },
                        },
                    },
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                            "metadata": _STRING_MAP,  # KEDA reads every value as a string
                            "authenticationRef": {
                                "type": "object",
                                "required": ["name"],
                                "additionalProperties": False,
                                "properties": {
                                    "name": {"type": "string"},
                                    "kind": {
                                        "enum": [
                                            "TriggerAuthentication",
                                            "ClusterTriggerAuthentication",
                                        ]
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}
TRIGGER_AUTHENTICATION = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "TriggerAuthentication"},
        "metadata": _META,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "secretTargetRef": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["parameter", "name", "key"],
                        "additionalProperties": False,
                        "properties": {
                            "parameter": {"type": "string"},
                            "name": {"type": "string"},
                            "key": {"type": "string"},
                        },
                    },
                },
            },
        },
    },
}
KEDA_SCHEMAS = {"ScaledObject": SCALED_OBJECT, "TriggerAuthentication": TRIGGER_AUTHENTICATION}
#: The metrics-api scaler's metadata keys (KEDA docs, scalers/metrics-api, 2.15+).
METRICS_API_KEYS = {"url", "format", "valueLocation", "targetValue", "activationTargetValue",
                    "unsafeSsl", "authMode", "method", "keyParamName"}  # fmt: skip


def test_keda_resources_match_our_schema() -> None:
    keda = {k: r for k, r in resources().items() if k[0] in CUSTOM_KINDS}
    assert {kind for kind, _ in keda} == CUSTOM_KINDS
    for (kind, _), resource in keda.items():
        jsonschema.validate(resource, KEDA_SCHEMAS[kind])
    broken = yaml.safe_load(yaml.safe_dump(keda[("ScaledObject", "mimoq-worker")]))
    broken["spec"]["minReplicas"] = 0  # the HPA's spelling, not KEDA's
    with pytest.raises(jsonschema.ValidationError, match="minReplicas"):
        jsonschema.validate(broken, SCALED_OBJECT)


def test_keda_scales_the_workers_on_desired_workers_from_serve_down_to_zero() -> None:
    found = resources()
    scaled = found[("ScaledObject", "mimoq-worker")]["spec"]
    assert ("Deployment", scaled["scaleTargetRef"]["name"]) in found
    assert scaled["minReplicaCount"] == 0  # scale to zero: serve still answers the trigger
    (trigger,) = scaled["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "metrics-api" and set(meta) <= METRICS_API_KEYS
    assert meta["format"] == "prometheus"
    assert meta["valueLocation"] == metrics.DESIRED_WORKERS.describe()[0].name
    # the gauge is a worker count: one replica per unit, activated by any value above 0
    assert (trigger["metricType"], meta["targetValue"], meta["activationTargetValue"]) == (
        "AverageValue", "1", "0",
    )  # fmt: skip
    # the URL is serve's Service, by its cluster name (KEDA runs in another namespace)
    service = found[("Service", "mimoq-serve")]
    port = service["spec"]["ports"][0]["port"]
    namespace = service["metadata"]["namespace"]
    assert meta["url"] == f"http://mimoq-serve.{namespace}.svc.cluster.local:{port}/metrics"
    # with serve's metrics token, from the Secret
    assert meta["authMode"] == "bearer"
    auth = found[("TriggerAuthentication", trigger["authenticationRef"]["name"])]["spec"]
    (ref,) = auth["secretTargetRef"]
    assert ref["parameter"] == "token"
    assert ref["key"] == "MIMOQ_METRICS_TOKEN"
    assert ref["key"] in found[("Secret", ref["name"])]["stringData"]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_configuration_comes_from_the_configmap_and_the_secret_and_names_real_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = resources()
    known = set(env_names()) | {"AWS_REGION", "AWS_ENDPOINT", "AWS_ALLOW_HTTP",
                                "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}  # fmt: skip
    config = found[("ConfigMap", "mimoq-config")]["data"]
    secret = found[("Secret", "mimoq-secrets")]["stringData"]
    assert set(config) | set(secret) <= known
    assert not set(config) & {"MIMO_API_KEY", "MIMOQ_API_TOKENS", "MIMOQ_METRICS_TOKEN",
                              "MIMOQ_WEBHOOK_SECRET", "REDIS_URL", "AWS_SECRET_ACCESS_KEY"}  # fmt: skip
    for name in ("mimoq-worker", "mimoq-serve"):
        container = _container(found[("Deployment", name)])
        assert container["envFrom"] == [
            {"configMapRef": {"name": "mimoq-config"}}, {"secretRef": {"name": "mimoq-secrets"}},
        ]  # fmt: skip
    # the ConfigMap's values are ones the settings accept, read from the environment
    for name, value in config.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.worker.concurrency == int(config["MIMOQ_CONCURRENCY"])
    assert settings.worker.shutdown_grace_s == float(config["MIMOQ_SHUTDOWN_GRACE_S"])
    assert settings.storage.location() == config["MIMOQ_STORAGE_URL"]


def test_the_secrets_placeholders_stop_serve_instead_of_opening_it() -> None:
    from mimoq.core.errors import ConfigurationError
    from mimoq.http.auth import TokenTable
    from mimoq.http.metrics_route import check_metrics_token

    secret = resources()[("Secret", "mimoq-secrets")]["stringData"]
    with pytest.raises(ConfigurationError):
        TokenTable(secret["MIMOQ_API_TOKENS"].split(","))
    with pytest.raises(ConfigurationError):
        check_metrics_token(Settings(http={"metrics_token": secret["MIMOQ_METRICS_TOKEN"]}))


def test_workers_get_time_to_finish_in_flight_calls_and_probe_healthz() -> None:
    found = resources()
    config = found[("ConfigMap", "mimoq-config")]["data"]
    worker = found[("Deployment", "mimoq-worker")]["spec"]["template"]["spec"]
    grace = float(config["MIMOQ_SHUTDOWN_GRACE_S"])
    assert worker["terminationGracePeriodSeconds"] >= grace + 10  # the drain, then a margin
    container = _container(found[("Deployment", "mimoq-worker")])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == int(config["MIMOQ_METRICS_PORT"])
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    args = build_parser().parse_args(container["command"][1:])
    assert args.command == "worker"


def test_serve_listens_on_its_service_port_and_probes_healthz() -> None:
    found = resources()
    container = _container(found[("Deployment", "mimoq-serve")])
    args = build_parser().parse_args(container["command"][1:])
    assert (args.command, args.host, args.port) == ("serve", "0.0.0.0", 8080)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == args.port
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    service = found[("Service", "mimoq-serve")]["spec"]
    selector = found[("Deployment", "mimoq-serve")]["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= selector.items()
    assert service["ports"][0]["targetPort"] == "http"


def test_compose_gives_workers_the_same_stop_time() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    worker = resources()[("Deployment", "mimoq-worker")]["spec"]["template"]["spec"]
    assert compose["services"]["worker"]["stop_grace_period"] == (
        f"{worker['terminationGracePeriodSeconds']}s"
    )
