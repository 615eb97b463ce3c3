"""Routes as data: each ``Operation`` is both a Starlette route and its OpenAPI description.

``mimoq.http.routes`` lists the operations; the app is assembled from that list and
``/openapi.json`` is built from the same list, so a route cannot exist undescribed.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from starlette.requests import Request
from starlette.responses import Response

from mimoq.http.schemas import COMPONENTS, ID_SCHEMA, Schema, ref

Endpoint = Callable[[Request], Awaitable[Response]]
OPENAPI_VERSION: Final = "3.1.0"
_PATH_PARAM: Final = re.compile(r"{(\w+)}")


@dataclass(frozen=True)
class Operation:
    """One method on one path: what runs, and what it takes and answers."""

    method: Literal["GET", "POST"]
    path: str
    name: str  #: the operationId (and the route label of the request metrics)
    summary: str
    endpoint: Endpoint
    tag: str
    responses: Mapping[str, Schema]
    bearer: bool = False  #: needs ``Authorization: Bearer <token>`` (when tokens are set)
    body: Schema | None = None  #: the OpenAPI requestBody object
    parameters: tuple[Schema, ...] = ()
    description: str = ""

    def path_parameters(self) -> list[Schema]:
        return [
            {"name": name, "in": "path", "required": True, "schema": ID_SCHEMA}
            for name in _PATH_PARAM.findall(self.path)
        ]

    def describe(self) -> Schema:
        """The OpenAPI operation object."""
        op: Schema = {"operationId": self.name, "summary": self.summary, "tags": [self.tag]}
        if self.description:
            op["description"] = self.description
        parameters = [*self.path_parameters(), *self.parameters]
        if parameters:
            op["parameters"] = parameters
        if self.body is not None:
            op["requestBody"] = self.body
        op["responses"] = dict(sorted(self.responses.items()))
        op["security"] = [{"bearer": []}] if self.bearer else []
        return op


# --- helpers for the route table ----------------------------------------------------------


def json_body(schema: str) -> Schema:
    return {"required": True, "content": {"application/json": {"schema": ref(schema)}}}


def form_body(schema: str, media_type: str = "multipart/form-data") -> Schema:
    return {"required": True, "content": {media_type: {"schema": ref(schema)}}}


def answer(description: str, content: Mapping[str, Schema] | None = None, **headers: str) -> Schema:
    """A response object; ``content`` maps media types to schemas (``{}`` for any bytes)."""
    out: Schema = {"description": description}
    if content is not None:
        out["content"] = {media: {"schema": schema} for media, schema in content.items()}
    if headers:
        out["headers"] = {
            name.replace("_", "-"): {"description": text, "schema": {"type": "string"}}
            for name, text in headers.items()
        }
    return out


def json_answer(description: str, schema: str, **headers: str) -> Schema:
    return answer(description, {"application/json": ref(schema)}, **headers)


def error(description: str, **headers: str) -> Schema:
    return json_answer(description, "Error", **headers)


def html(description: str) -> Schema:
    return answer(description, {"text/html": {"type": "string"}})


def redirect(description: str) -> Schema:
    return answer(description, Location="Where to go next.")


def linked(response: Schema, param: str, *operations: str) -> Schema:
    """``response`` with links: its body's ``id`` is ``param`` of each of ``operations``."""
    links = {
        name: {"operationId": name, "parameters": {param: "$response.body#/id"}}
        for name in operations
    }
    return {**response, "links": links}


def header(name: str, description: str, schema: Schema | None = None) -> Schema:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


# --- the document -------------------------------------------------------------------------


def document(operations: Iterable[Operation], *, version: str) -> Schema:
    """The OpenAPI 3.1 document of these operations."""
    paths: dict[str, dict[str, Schema]] = {}
    for op in operations:
        methods = paths.setdefault(op.path, {})
        if op.method.lower() in methods:
            raise ValueError(f"{op.method} {op.path} is declared twice")
        methods[op.method.lower()] = op.describe()
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "mimoq",
            "version": version,
            "description": "OpenAI-compatible speech and transcription over a Redis job "
            "queue for Xiaomi MiMo, with mimoq's additions: callback, metadata, "
            "Prefer: respond-async and /v1/jobs.",
        },
        "paths": paths,
        "components": {
            "schemas": COMPONENTS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token of MIMOQ_API_TOKENS (each names a tenant). Without "
                    "tokens configured the server listens on loopback only and asks for none.",
                }
            },
        },
    }
