"""The public Python API: ``from mimoq import …`` (lazily), and ``Producer.from_env``."""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mimoq
from mimoq.core.errors import ConfigurationError
from mimoq.core.settings import Settings
from tests.conftest import RedisServer
from tests.support.cli import clean_env

ROOT = Path(__file__).resolve().parents[2]
#: Where a library user reads the Python example: the README and docs/python.md.
PYTHON_EXAMPLES = {
    "README.md": "### Python",
    "docs/python.md": "From Python — everything public is importable from `mimoq`",
}


@pytest.mark.parametrize("name", mimoq.__all__)
def test_every_public_name_is_the_defining_modules_own(name: str) -> None:
    value = getattr(mimoq, name)
    home = importlib.import_module(value.__module__)
    assert getattr(home, name) is value
    assert name in dir(mimoq)


def test_the_plain_names_a_library_user_needs_are_public() -> None:
    from mimoq import JobResult, Producer, Settings, SpeechJob, TranscriptionJob

    assert Producer.from_env is not None and Settings is not None
    assert SpeechJob(input="Hi").kind == "speech"
    assert TranscriptionJob(file="s3://bucket/meeting.mp3").kind == "transcription"
    assert "status" in JobResult.model_fields
    assert sorted(mimoq.__all__) == mimoq.__all__


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = mimoq.Nope  # type: ignore[attr-defined]


def test_importing_mimoq_or_its_modules_does_not_import_the_producer() -> None:
    code = (
        "import sys, json, mimoq, mimoq.core.wire; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('mimoq'))))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, check=True
    )
    loaded = json.loads(run.stdout)
    assert "mimoq.producer.client" not in loaded and "mimoq.core.settings" not in loaded


@pytest.mark.parametrize("page", sorted(PYTHON_EXAMPLES))
def test_the_python_example_uses_only_public_names(page: str) -> None:
    text = (ROOT / page).read_text()
    start = text.index(PYTHON_EXAMPLES[page])
    block = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert block is not None
    tree = ast.parse(block.group(1))  # top-level `async with` parses as a module statement
    imported = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    assert imported
    for node in imported:
        assert isinstance(node, ast.ImportFrom) and node.module == "mimoq", ast.unparse(node)
        assert {alias.name for alias in node.names} <= set(mimoq.__all__)


@pytest.mark.redis
async def test_from_env_reads_redis_url_and_the_settings_the_cli_reads(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("MIMOQ_RESULT_TTL_S", "4321")
    monkeypatch.setenv("MIMOQ_DATA_DIR", str(tmp_path / "data"))
    async with mimoq.Producer.from_env() as producer:
        assert producer.settings == Settings()  # what the `mimoq` command builds
        assert producer.settings.storage.result_ttl_s == 4321
        assert producer.storage is not None  # local inputs are uploaded, as by the CLI
        assert await producer.redis.ping()
        port = producer.redis.connection_pool.connection_kwargs["port"]
        assert port == redis_server.port
        job = await producer.enqueue(mimoq.SpeechJob(input="Hello"))
        assert (await producer.status(job.job_id)).status == mimoq.JobStatus.queued
    # It made its client, so it closed it.
    pool = producer.redis.connection_pool
    assert not pool._in_use_connections  # type: ignore[attr-defined]
    assert pool._available_connections  # type: ignore[attr-defined]
    assert not any(c.is_connected for c in pool._available_connections)  # type: ignore[attr-defined]


def test_from_env_without_redis_url_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(ConfigurationError, match="needs REDIS_URL") as refused:
        mimoq.Producer.from_env()
    assert "mimoq worker" in refused.value.message
