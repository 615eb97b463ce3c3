"""Pure pieces of the front door: tokens, the Prefer header, model aliases, the layering."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from starlette.requests import Request

from mimoq.core.errors import ConfigurationError
from mimoq.http.audio_routes import wants_async
from mimoq.http.auth import DEFAULT_TENANT, TokenTable, bearer_token, check_bind, is_loopback
from mimoq.http.models import speech_model, transcription_model

ROOT = Path(__file__).resolve().parents[2]


def test_tokens_name_tenants_and_refuse_weak_entries() -> None:
    table = TokenTable(["alice:" + "a" * 20, "b" * 20])
    assert table.tenant_of("a" * 20) == "alice"
    assert table.tenant_of("b" * 20) == DEFAULT_TENANT
    assert table.tenant_of("a" * 19) is None and table.tenant_of("") is None
    with pytest.raises(ConfigurationError, match="entry #2") as short:
        TokenTable(["x" * 20, "bob:tiny"])
    assert "tiny" not in str(short.value)
    with pytest.raises(ConfigurationError, match="name"):
        TokenTable(["bad name!:" + "c" * 20])


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        (None, None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_bind_without_tokens_is_loopback_only() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.com")
    check_bind("127.0.0.1", TokenTable([]))
    check_bind("0.0.0.0", TokenTable(["t" * 20]))
    with pytest.raises(ConfigurationError, match="MIMOQ_API_TOKENS"):
        check_bind("0.0.0.0", TokenTable([]))


def _request(*prefer: str) -> Request:
    headers = [(b"prefer", p.encode()) for p in prefer]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers})


def test_prefer_respond_async_per_rfc_7240() -> None:
    assert wants_async(_request("respond-async"))
    assert wants_async(_request("wait=10, Respond-Async"))
    assert wants_async(_request("return=minimal", "respond-async; foo=bar"))
    assert not wants_async(_request("return=representation"))
    assert not wants_async(_request())


def test_model_aliases_are_only_the_honest_ones() -> None:
    assert speech_model("tts-1") == "mimo-v2.5-tts"
    assert speech_model("whisper-1") == "whisper-1"  # left for the job check to refuse
    assert transcription_model("whisper-1") == "mimo-v2.5-asr"
    assert transcription_model("tts-1") == "tts-1"


def test_http_layer_imports_only_core_and_producer() -> None:
    for path in (ROOT / "mimoq" / "http").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mimoq"):
                assert node.module.split(".")[1] in ("core", "producer", "http"), (
                    path,
                    node.module,
                )
    for package in ("core", "producer", "worker", "sim"):
        for path in (ROOT / "mimoq" / package).rglob("*.py"):
            assert "mimoq.http" not in path.read_text(), path
