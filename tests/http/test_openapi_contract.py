"""The OpenAPI contract of ``mimoq serve``: valid OpenAPI 3.1, describing exactly the routes
the app serves, with bearer auth and OpenAI's error object; ``/docs`` loads nothing.

Whoever adds or changes a route changes ``mimoq/http/routes.py`` (the table the app is
assembled from); a route served any other way fails ``test_every_route_is_described``.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from openapi_spec_validator import validate
from starlette.routing import Route
from starlette.testclient import TestClient

from mimoq.core.jobs import JobResult, JobStatus
from mimoq.core.results import StatusReport
from mimoq.core.settings import Settings
from mimoq.http.app import build_app
from mimoq.http.auth import TokenTable
from mimoq.http.contract import Operation, document
from mimoq.http.routes import OPERATIONS

TOKEN = "tok-contract-0123456789abcdef"


@pytest.fixture(scope="module")
def http() -> TestClient:
    # No lifespan (no Redis): the document and its page are served without one.
    return TestClient(build_app(Settings(), TokenTable([f"alice:{TOKEN}"])))


@pytest.fixture(scope="module")
def spec(http: TestClient) -> dict[str, Any]:
    answer = http.get("/openapi.json")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    body: dict[str, Any] = answer.json()
    return body


def test_the_document_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    validate(spec)  # raises on the first problem
    assert spec["openapi"].startswith("3.1")


def test_every_route_is_described(http: TestClient, spec: dict[str, Any]) -> None:
    served = {
        (route.path, method.lower())
        for route in http.app.routes  # type: ignore[attr-defined]
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"  # Starlette's own companion of every GET
    }
    described = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert served - described == set(), "served but not in /openapi.json"
    assert described - served == set(), "in /openapi.json but not served"
    assert len(served) == len(OPERATIONS)


def test_a_route_declared_twice_is_refused() -> None:
    twice = (OPERATIONS[0], OPERATIONS[0])
    with pytest.raises(ValueError, match="declared twice"):
        document(twice, version="0")


def _responses(op: dict[str, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = op["responses"]
    return responses


def test_api_routes_need_the_bearer_token_and_say_so(spec: dict[str, Any]) -> None:
    scheme = spec["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            guarded = path.startswith("/v1/") or path == "/metrics"
            assert (op["security"] == [{"bearer": []}]) is guarded, (method, path)
            if guarded:
                unauthorized = _responses(op)["401"]
                assert unauthorized["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Error"
                }
                assert "WWW-Authenticate" in unauthorized["headers"]


def test_every_body_and_every_refusal_is_described(spec: dict[str, Any]) -> None:
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            responses = _responses(op)
            if "requestBody" in op:
                assert {"400", "413"} <= set(responses), (method, path)
            for status, answer in responses.items():
                if int(status) >= 400 and path.startswith("/v1/"):
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path)
            for name in re.findall(r"{(\w+)}", path):
                params = [p for p in op["parameters"] if p["in"] == "path"]
                assert [p["name"] for p in params] == [name], (method, path)
                assert "404" in responses, (method, path)


def test_the_error_object_matches_what_the_server_sends(
    http: TestClient, spec: dict[str, Any]
) -> None:
    from jsonschema import Draft202012Validator

    schema = {**spec["components"]["schemas"]["Error"], "components": spec["components"]}
    body = http.get("/no/such/route").json()
    assert http.get("/no/such/route").status_code == 404
    Draft202012Validator(schema).validate(body)


def test_docs_render_every_operation_and_load_nothing(
    http: TestClient, spec: dict[str, Any]
) -> None:
    answer = http.get("/docs")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    csp = answer.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    page = answer.text
    for forbidden in ("<script", "<link", "<iframe", "@import", "url(", "src="):
        assert forbidden not in page.lower(), forbidden
    assert not re.search(r"""href=["']https?://""", page), "an external link"
    for path, ops in spec["paths"].items():
        for op in ops.values():
            assert f'id="op-{op["operationId"]}"' in page
        assert path in page
    for name in spec["components"]["schemas"]:
        assert f'id="schema-{name}"' in page


def test_an_operation_describes_what_its_table_row_says() -> None:
    speech = next(op for op in OPERATIONS if op.name == "speech")
    assert isinstance(speech, Operation)
    described = speech.describe()
    assert described["operationId"] == "speech"
    assert described["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SpeechRequest"
    }
    assert {p["name"] for p in described["parameters"]} == {"Prefer", "Idempotency-Key"}
    assert {"200", "202", "400", "401", "504"} <= set(described["responses"])


def test_the_job_schema_documents_every_field_a_job_answer_carries(
    spec: dict[str, Any],
) -> None:
    # GET /v1/jobs/{id} answers a finished job's result record (JobResult) and an unfinished
    # one's status report; a field in either but not in the schema is undocumented.
    documented = set(spec["components"]["schemas"]["Job"]["properties"])
    report = StatusReport("j", JobStatus.queued, run_at=1.0, waiting=True, reason="held")
    answered = set(JobResult.model_fields) | set(report.to_dict()) | {"object"}
    assert answered - documented == set()
