"""mimoq.core.logs: one pipeline for structlog and stdlib, secrets scrubbed, job context on every line."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest
import structlog

from mimoq.core import logs


def lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize("json_logs", [True, False])
@pytest.mark.parametrize(
    "emit",
    [
        lambda s: structlog.get_logger("t").info("event", key=s),
        lambda s: structlog.get_logger("t").info(f"message with {s} inside"),
        lambda s: logging.getLogger("arq.worker").info("foreign %s line", s),
        lambda s: structlog.get_logger("t").warning("obj", obj={"nested": [s]}),
    ],
    ids=["kwarg", "event", "stdlib", "nested-repr"],
)
def test_registered_secret_never_rendered(
    capsys: pytest.CaptureFixture[str], json_logs: bool, emit: object
) -> None:
    secret = "sk-test-secret-aaaaaaaa-" + ("json" if json_logs else "console")
    logs.configure(level="DEBUG", json_logs=json_logs)
    logs.register_secrets(secret)
    emit(secret)  # type: ignore[operator]
    err = capsys.readouterr().err
    assert secret not in err and logs.REDACTED in err


def test_secret_in_a_traceback_is_scrubbed(capsys: pytest.CaptureFixture[str]) -> None:
    secret = "sk-test-secret-in-traceback-1"
    logs.configure(json_logs=True)
    logs.register_secrets(secret)
    try:
        raise RuntimeError(f"upstream echoed {secret}")
    except RuntimeError:
        structlog.get_logger("t").exception("boom")
    record = json.loads(lines(capsys.readouterr().err)[-1])
    assert "RuntimeError" in record["exception"]  # JSON keeps the traceback as text
    assert secret not in record["exception"]


def test_webhook_secret_key_is_scrubbed_without_its_prefix(
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = "QmFzZTY0S2V5Rm9yVGVzdGluZ09ubHkx"
    logs.configure(json_logs=True)
    logs.register_secrets("whsec_" + key)
    structlog.get_logger("t").info("signing", key=key)
    assert key not in capsys.readouterr().err


@pytest.mark.parametrize("value", [None, "", "short"])
def test_short_or_empty_values_are_not_registered(
    capsys: pytest.CaptureFixture[str], value: str | None
) -> None:
    logs.configure(json_logs=True)
    logs.register_secrets(value)
    structlog.get_logger("t").info("a short word stays readable")
    assert "a short word stays readable" in capsys.readouterr().err


def test_arq_start_line_loses_the_job_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure(json_logs=True)
    arq_log = logging.getLogger("arq.worker")
    arq_log.info("%6.2fs → %s(%s)%s", 0.25, "job-1:speech", "job={'input': 'private words'}", "")
    arq_log.info("%6.2fs ← %s ● %s", 0.5, "job-1:speech", "{'status': 'succeeded'}")
    started, finished = (json.loads(line)["event"] for line in lines(capsys.readouterr().err))
    assert "private words" not in started and "job-1:speech(…)" in started
    assert "succeeded" in finished  # other arq lines are untouched


def test_bound_job_context_reaches_foreign_lines(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure(json_logs=True)
    structlog.contextvars.bind_contextvars(job_id="j-7", job_try=2, kind="speech", model="m")
    logging.getLogger("httpx").warning("from a library")
    structlog.get_logger("t").info("ours")
    for line in lines(capsys.readouterr().err):
        record = json.loads(line)
        assert (record["job_id"], record["job_try"], record["kind"], record["model"]) == (
            "j-7",
            2,
            "speech",
            "m",
        )


def test_level_filters_and_httpx_info_is_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure(level="INFO", json_logs=True)
    structlog.get_logger("t").debug("hidden")
    logging.getLogger("httpx").info("HTTP Request: POST https://example/v1?token=x")
    structlog.get_logger("t").info("shown")
    assert [json.loads(line)["event"] for line in lines(capsys.readouterr().err)] == ["shown"]


def test_lines_go_to_the_current_stderr_after_the_old_one_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``mimoq.cli.main`` run in-process while stderr was a stand-in (pytest's capsys, a
    notebook) must not leave logging writing to that stand-in once it is closed."""
    configured_with = io.StringIO()
    monkeypatch.setattr(sys, "stderr", configured_with)
    logs.configure(level="WARNING", json_logs=True)
    configured_with.close()
    now = io.StringIO()
    monkeypatch.setattr(sys, "stderr", now)
    structlog.get_logger("t").warning("after the stand-in closed", n=1)
    logging.getLogger("arq.worker").warning("a foreign line")
    out = lines(now.getvalue())
    assert "Logging error" not in now.getvalue()
    assert [json.loads(line)["event"] for line in out] == [
        "after the stand-in closed",
        "a foreign line",
    ]
