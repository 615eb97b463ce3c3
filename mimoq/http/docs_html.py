"""``/docs``: the OpenAPI document as one server-rendered page.

No script, font or stylesheet is loaded from anywhere (no CDN, no JavaScript at all):
each operation is a ``<details>`` block with its parameters, body and answers, and the
schemas are printed as JSON under their names, linked from where they are used.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from html import escape
from typing import Any, Final

_STYLE: Final = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:960px;padding:0 16px 40px;
color:#1d2330}h1{margin:20px 0 4px}h2{margin:28px 0 8px;font-size:17px}
details{border:1px solid #dde;border-radius:6px;margin:6px 0;padding:4px 10px;background:#fff}
summary{cursor:pointer;font-family:ui-monospace,monospace}.m{display:inline-block;width:44px;
font-weight:700}.get{color:#1b6f3b}.post{color:#1d4fb3}.lock{color:#b3261e;font-size:12px}
table{border-collapse:collapse;margin:4px 0 8px}td,th{text-align:left;padding:2px 8px;
border-bottom:1px solid #eee;vertical-align:top}pre{background:#f6f7f9;padding:8px;
overflow-x:auto;font-size:12px}code{font-size:13px}.muted{color:#777}
"""
_HEADERS: Final = {
    # Inline styles only: nothing else may load or run.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
}


def _e(value: object) -> str:
    return escape("" if value is None else str(value))


def _schema_link(schema: Mapping[str, Any]) -> str:
    target = schema.get("$ref")
    if isinstance(target, str):
        name = target.rsplit("/", 1)[-1]
        return f'<a href="#schema-{_e(name)}">{_e(name)}</a>'
    if not schema:
        return '<span class="muted">bytes</span>'
    return f"<code>{_e(json.dumps(schema, ensure_ascii=False))}</code>"


def _content(content: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><td><code>{_e(media)}</code></td><td>{_schema_link(spec.get('schema', {}))}</td></tr>"
        for media, spec in content.items()
    )
    return f"<table>{rows}</table>" if rows else ""


def _operation(path: str, method: str, op: Mapping[str, Any]) -> str:
    lock = ' <span class="lock">bearer</span>' if op.get("security") else ""
    parts = [
        f'<details id="op-{_e(op["operationId"])}"><summary><span class="m {_e(method)}">'
        f"{_e(method.upper())}</span> {_e(path)} — {_e(op.get('summary'))}{lock}</summary>"
    ]
    if op.get("description"):
        parts.append(f"<p>{_e(op['description'])}</p>")
    params = op.get("parameters", [])
    if params:
        rows = "".join(
            f"<tr><td><code>{_e(p['name'])}</code></td><td>{_e(p['in'])}</td>"
            f"<td>{_e(p.get('description', ''))}</td></tr>"
            for p in params
        )
        parts.append(f"<h4>Parameters</h4><table>{rows}</table>")
    if "requestBody" in op:
        parts.append("<h4>Body</h4>" + _content(op["requestBody"].get("content", {})))
    rows = "".join(
        f"<tr><td>{_e(status)}</td><td>{_e(resp.get('description'))}</td>"
        f"<td>{_content(resp.get('content', {}))}</td></tr>"
        for status, resp in op.get("responses", {}).items()
    )
    parts.append(f"<h4>Answers</h4><table>{rows}</table></details>")
    return "".join(parts)


def openapi_page(doc: Mapping[str, Any]) -> str:
    """The whole page for an OpenAPI document."""
    info = doc.get("info", {})
    ops = "".join(
        _operation(path, method, op)
        for path, methods in doc.get("paths", {}).items()
        for method, op in methods.items()
    )
    schemas = "".join(
        f'<h3 id="schema-{_e(name)}">{_e(name)}</h3>'
        f"<pre>{_e(json.dumps(schema, indent=2, ensure_ascii=False))}</pre>"
        for name, schema in doc.get("components", {}).get("schemas", {}).items()
    )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(info.get('title'))} API</title><style>{_STYLE}</style></head><body>"
        f"<h1>{_e(info.get('title'))} {_e(info.get('version'))}</h1>"
        f"<p>{_e(info.get('description'))}</p>"
        f'<p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI '
        f"{_e(doc.get('openapi'))}).</p><h2>Operations</h2>{ops}<h2>Schemas</h2>{schemas}"
        "</body></html>"
    )


def headers() -> dict[str, str]:
    return dict(_HEADERS)
