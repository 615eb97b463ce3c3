"""The ``mimoq`` command as people and scripts use it: real processes, real exit codes."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import pytest
from arq.connections import ArqRedis

from mimoq.producer.client import Producer
from mimoq.sim.sim_server import RunningSim
from tests.conftest import RedisServer
from tests.e2e.conftest import API_KEY, e2e_settings, running_worker
from tests.support.cli import clean_env, mimoq

pytestmark = pytest.mark.slow


def test_embedded_default_speaks_a_wav_with_no_redis_server(
    sim: RunningSim, tmp_path: Path
) -> None:
    env = clean_env(
        MIMO_API_KEY=API_KEY, MIMO_BASE_URL=sim.url, MIMOQ_DATA_DIR=str(tmp_path / "out")
    )
    done = mimoq(
        "speak",
        "Hello from one machine.",
        "--voice",
        "Chloe",
        "--out",
        "hello.wav",
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded"
    assert Path(result["output"]["path"]).is_relative_to(tmp_path / "out")
    with wave.open(str(tmp_path / "hello.wav")) as w:
        assert w.getframerate() == 24_000 and w.getnframes() > 0
    assert API_KEY not in done.stdout + done.stderr


def test_embedded_default_transcribes(sim: RunningSim, tmp_path: Path) -> None:
    from tests.e2e.test_pipeline import speech_wav

    audio = speech_wav(tmp_path / "a.wav", "Transcribed locally.")
    env = clean_env(
        MIMO_API_KEY=API_KEY, MIMO_BASE_URL=sim.url, MIMOQ_DATA_DIR=str(tmp_path / "out")
    )
    done = mimoq("transcribe", str(audio), "--format", "text", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["text"] == "Transcribed locally."


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ("speak", "Hi", "--format", "mp3"),
            "invalid_request_error: response_format 'mp3' is not supported",
        ),
        (("transcribe", "missing.wav"), "invalid_request_error: file:"),
        (("transcribe", "song.flac"), ".wav or .mp3"),
    ],
)
def test_refusals_are_one_line_on_stderr(tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    # A key (never used: the refusal comes first) so the no-key check does not answer instead.
    env = clean_env(MIMOQ_DATA_DIR=str(tmp_path), MIMO_API_KEY="sk-refusal-test")
    done = mimoq(*args, env=env, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_token_plan_key_without_region_is_a_clear_startup_error(tmp_path: Path) -> None:
    done = mimoq("speak", "Hi", env=clean_env(MIMO_API_KEY="tp-secret-plan-key"), cwd=tmp_path)
    assert done.returncode == 2
    assert "MIMO_REGION" in done.stderr and "tp-secret-plan-key" not in done.stderr


def test_failed_job_exits_non_zero(sim: RunningSim, tmp_path: Path) -> None:
    env = clean_env(MIMO_API_KEY="sk-wrong", MIMO_BASE_URL=sim.url, MIMOQ_DATA_DIR=str(tmp_path))
    done = mimoq("speak", "Hi", env=env, cwd=tmp_path)
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"]["type"] == "authentication_error"


@pytest.mark.redis
async def test_enqueue_then_status_with_a_shared_redis(
    redis_server: RedisServer, sim: RunningSim, tmp_path: Path, redis: ArqRedis
) -> None:
    env = clean_env(
        MIMO_API_KEY=API_KEY,
        MIMO_BASE_URL=sim.url,
        REDIS_URL=redis_server.url,
        MIMOQ_DATA_DIR=str(tmp_path),
    )
    queued = mimoq("speak", "Queued for the fleet.", "--id", "cli-1", env=env, cwd=tmp_path)
    assert queued.returncode == 0, queued.stderr
    assert json.loads(queued.stdout) == {"id": "cli-1", "status": "queued"}
    assert json.loads(mimoq("status", "cli-1", env=env, cwd=tmp_path).stdout)["status"] == "queued"

    again = mimoq("speak", "Queued for the fleet.", "--id", "cli-1", env=env, cwd=tmp_path)
    assert json.loads(again.stdout)["status"] == "duplicate"

    settings = e2e_settings(redis_server, sim, tmp_path)
    async with running_worker(settings), Producer(redis, settings) as producer:
        # Woken by the worker's finish, not by starting `mimoq status` until it says so
        # (a second of interpreter start-up per try on a loaded machine).
        await producer.wait("cli-1", timeout_s=60)
    waited = json.loads(mimoq("status", "cli-1", env=env, cwd=tmp_path).stdout)
    assert waited["status"] == "succeeded"
    assert waited["result"]["output"]["path"].endswith("cli-1.wav")
    missing = mimoq("status", "nope", env=env, cwd=tmp_path)
    assert missing.returncode == 1 and json.loads(missing.stdout)["status"] == "not_found"


def test_demo_exits_zero(tmp_path: Path) -> None:
    done = mimoq("demo", env=clean_env(MIMOQ_DATA_DIR=str(tmp_path)), cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "round trip (speech → transcript matches the text): yes" in done.stdout
    assert done.stdout.count("signed ✓") == 6


def test_every_command_answers_help(capsys: pytest.CaptureFixture[str]) -> None:
    from mimoq.cli import build_parser, main

    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {
        "speak",
        "transcribe",
        "status",
        "worker",
        "sim",
        "demo",
        "batch",
        "health",
        "inspect",
    } <= set(commands)
    for command in commands:
        try:
            code = main([command, "--help"])
        except SystemExit as exc:
            code = exc.code  # argparse's own help exits 0
        assert code == 0, command
        assert "usage" in capsys.readouterr().out.lower(), command
