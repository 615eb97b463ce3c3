"""``mimoq callbacks list|show|replay`` against a private Redis."""

from __future__ import annotations

import argparse
import asyncio
import json

import pytest
from arq.connections import ArqRedis

from mimoq.cli.callbacks import register
from mimoq.core import deadletters
from mimoq.core.deadletters import DeadLetterReason
from mimoq.core.settings import Settings
from tests.callbacks.conftest import make_settings, run_worker
from tests.callbacks.test_deadletters import TTL, letter
from tests.conftest import RedisServer
from tests.support.receiver import Receiver

pytestmark = pytest.mark.redis


def mimoq(args: list[str], redis_server: RedisServer, **settings: object) -> int:
    parser = argparse.ArgumentParser(prog="mimoq")
    register(parser.add_subparsers(dest="command", required=True))
    namespace = parser.parse_args(args)
    code: int = namespace.func(namespace, Settings(redis_url=redis_server.url, **settings))
    return code


def lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def stored(redis_server: RedisServer) -> None:
    async def fill() -> None:
        redis = ArqRedis.from_url(redis_server.url)
        await redis.flushall()
        await deadletters.put(redis, letter(1, job="a", reason=DeadLetterReason.gone), ttl_s=TTL)
        await deadletters.put(
            redis, letter(2, job="b", reason=DeadLetterReason.exhausted), ttl_s=TTL
        )
        await deadletters.put(
            redis, letter(3, job="c", reason=DeadLetterReason.exhausted), ttl_s=TTL
        )
        await redis.aclose()

    asyncio.run(fill())


def test_list_all_and_filtered(
    stored: None, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mimoq(["callbacks", "list"], redis_server) == 0
    assert [x["delivery_id"] for x in lines(capsys.readouterr().out)] == ["cb-c", "cb-b", "cb-a"]

    assert mimoq(["callbacks", "list", "--reason", "exhausted", "--limit", "1"], redis_server) == 0
    [only] = lines(capsys.readouterr().out)
    assert (only["delivery_id"], only["reason"], only["attempts"]) == ("cb-c", "exhausted", 8)
    assert only["target"] == "https://hooks.example:443"

    assert mimoq(["callbacks", "list", "--job", "a"], redis_server) == 0
    assert [x["job_id"] for x in lines(capsys.readouterr().out)] == ["a"]


def test_show_redacts_unless_revealed(
    stored: None, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mimoq(["callbacks", "show", "cb-a"], redis_server) == 0
    out = capsys.readouterr().out
    [shown] = lines(out)
    assert shown["headers"] == {"Authorization": "<redacted>"}
    assert shown["body"] == '{"n":1}' and "url" not in shown
    assert "secret-1" not in out and "token=t1" not in out

    assert mimoq(["callbacks", "show", "cb-a", "--reveal"], redis_server) == 0
    [revealed] = lines(capsys.readouterr().out)
    assert revealed["headers"] == {"Authorization": "Bearer secret-1"}
    assert revealed["url"] == "https://u:p@hooks.example/cb/1?token=t1"


def test_show_unknown_is_an_error_line(
    stored: None, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mimoq(["callbacks", "show", "cb-nope"], redis_server) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "no delivery or dead letter 'cb-nope'" in captured.err
    assert len(captured.err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["callbacks", "replay"],
        ["callbacks", "replay", "cb-a", "--all"],
        ["callbacks", "replay", "cb-a", "--reason", "gone"],
    ],
)
def test_replay_needs_one_id_or_all(
    stored: None, redis_server: RedisServer, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    assert mimoq(args, redis_server) == 1
    assert capsys.readouterr().err.startswith("mimoq callbacks: ")


def test_replay_all_with_a_filter_enqueues_matching_ones(
    stored: None, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mimoq(["callbacks", "replay", "--all", "--reason", "exhausted"], redis_server) == 0
    out = lines(capsys.readouterr().out)
    assert [(x["delivery_id"], x["outcome"]) for x in out] == [
        ("cb-c", "enqueued"),
        ("cb-b", "enqueued"),
    ]
    assert mimoq(["callbacks", "replay", "cb-b"], redis_server) == 0
    assert lines(capsys.readouterr().out) == [{"delivery_id": "cb-b", "outcome": "already_pending"}]
    assert mimoq(["callbacks", "replay", "cb-zzz"], redis_server) == 1


def test_replay_from_the_cli_is_delivered_with_the_same_id(
    redis_server: RedisServer, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    async def dead_letter_one() -> None:
        redis = ArqRedis.from_url(redis_server.url)
        await redis.flushall()
        dead = letter(9, job="j9")
        dead.delivery = dead.delivery.model_copy(update={"url": receiver.url("/again")})
        await deadletters.put(redis, dead, ttl_s=TTL)
        await redis.aclose()

    asyncio.run(dead_letter_one())
    assert mimoq(["callbacks", "replay", "cb-j9"], redis_server) == 0
    assert lines(capsys.readouterr().out) == [{"delivery_id": "cb-j9", "outcome": "enqueued"}]

    asyncio.run(run_worker(redis_server, make_settings()))
    capsys.readouterr()  # structlog's default output goes to stdout: not the CLI's

    [request] = receiver.wait_for(1)
    assert request.headers["webhook-id"] == "cb-j9" and request.body == b'{"n":9}'
    assert request.headers["authorization"] == "Bearer secret-9"
    assert mimoq(["callbacks", "list"], redis_server) == 0
    assert capsys.readouterr().out == ""  # delivered, so no longer dead


def test_an_unreachable_redis_is_reported_by_the_cli_root(redis_server: RedisServer) -> None:
    from mimoq.core.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="REDIS_URL"):
        parser = argparse.ArgumentParser(prog="mimoq")
        register(parser.add_subparsers(dest="command", required=True))
        namespace = parser.parse_args(["callbacks", "list"])
        namespace.func(namespace, Settings(redis_url=None))


def test_show_prints_every_attempt_of_a_delivery_dead_or_not(
    redis_server: RedisServer, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.callbacks.conftest import schedule
    from tests.support.receiver import Response

    with Receiver() as elsewhere:
        receiver.respond(
            Response(503), Response(302, headers={"Location": elsewhere.url("/t?k=s")})
        )

        async def deliver() -> None:
            redis = ArqRedis.from_url(redis_server.url)
            await redis.flushall()
            await schedule(redis, receiver, job_id="j1", headers={"Authorization": "Bearer t0k"})
            await redis.aclose()
            await run_worker(redis_server, make_settings(callbacks={"schedule_s": "0,0.05,0.05"}))

        asyncio.run(deliver())
    capsys.readouterr()

    assert mimoq(["callbacks", "show", "cb-j1"], redis_server) == 0
    out = capsys.readouterr().out
    [shown] = lines(out)
    assert (shown["reason"], shown["dead_lettered"], shown["attempts"]) == ("redirect", True, 2)
    history = shown["history"]
    assert isinstance(history, list)
    assert [(a["outcome"], a["status_code"]) for a in history] == [
        ("retry", 503),
        ("dead_lettered", 302),
    ]
    assert history[1]["location"] == f"http://127.0.0.1:{elsewhere.port}"
    assert "k=s" not in out and "t0k" not in out  # redacted unless --reveal

    assert mimoq(["callbacks", "show", "cb-j1", "--reveal"], redis_server) == 0
    [revealed] = lines(capsys.readouterr().out)
    assert revealed["location"] == elsewhere.url("/t?k=s")
    assert revealed["headers"] == {"Authorization": "Bearer t0k"}
