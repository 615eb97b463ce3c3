"""``mimoq --help`` speaks to a user (issue 19, item 6): what mimoq is, and one example per
way in (command line, Python, Redis, HTTP), each of which works as printed."""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess

import pytest
from arq.connections import ArqRedis

import mimoq
from mimoq.core import wire
from mimoq.core.jobs import parse_job
from mimoq.http.audio_routes import speech_job
from tests.support.cli import clean_env, mimoq_args

WAYS_IN = ("command line", "Python", "Redis", "HTTP")


@pytest.fixture(scope="module")
def help_text() -> str:
    done = subprocess.run(
        mimoq_args("--help"), env=clean_env(COLUMNS="100"), capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def example(help_text: str, way: str) -> str:
    """The example lines of one way in, without their indentation and continuations."""
    after = help_text.split(f"\n  {way} ", 1)[1]
    block = re.split(r"\n  (?:" + "|".join(WAYS_IN) + r") |\n\n", after, maxsplit=1)[0]
    return "\n".join(line.strip() for line in block.splitlines()).replace("\\\n", " ")


def test_says_what_mimoq_is_with_one_example_per_way_in(help_text: str) -> None:
    assert "composition root" not in help_text and "imports worker and producer" not in help_text
    assert "text into speech and speech into text with Xiaomi MiMo" in help_text
    assert "one example per way in:" in help_text
    for way, sign in zip(WAYS_IN, ("mimoq speak", "from mimoq import", "enqueue.lua", "/v1/audio"), strict=True):  # fmt: skip
        assert sign in example(help_text, way), way
    assert max(len(line) for line in help_text.splitlines()) <= 100


def test_the_python_example_compiles_against_the_public_api(help_text: str) -> None:
    code = example(help_text, "Python")
    lines = code.splitlines()  # re-indent the body of the ``async with``
    code = "\n".join(lines[:2] + ["    " + line for line in lines[2:]])
    tree = compile(code, "<help>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT | ast.PyCF_ONLY_AST)
    imported = {a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for a in node.names}  # fmt: skip
    assert imported and imported <= set(mimoq.__all__)


@pytest.mark.redis
async def test_the_redis_example_enqueues_a_job(help_text: str, redis: ArqRedis) -> None:
    words = shlex.split(example(help_text, "Redis"))
    assert words[:3] == ["redis-cli", "EVAL", "$(cat mimoq/core/scripts/enqueue.lua)"]
    count = int(words[3])
    keys, args = words[4 : 4 + count], words[4 + count :]
    assert await redis.eval(wire.enqueue_script(), count, *keys, *args) == 1  # type: ignore[misc]
    assert await redis.exists(wire.job_key(args[0]))


def test_the_http_example_is_a_speech_request(help_text: str) -> None:
    words = shlex.split(example(help_text, "HTTP").split("\n", 1)[1])
    assert words[0] == "curl" and words[1].endswith("/v1/audio/speech")
    body = json.loads(words[words.index("-d") + 1])
    job = parse_job(speech_job(body, "help-example"))  # as mimoq serve reads the body
    assert (job.kind, job.input, job.voice) == ("speech", "Hello.", "Mia")
