"""``bench/limiter_asks.py``: each job's asks of the limiter and what each decided, read from
a real ``redis-cli MONITOR`` capture of the real limiter on a real redis-server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from redis.asyncio import Redis

from mimoq.core import arq_compat, scripts, wire
from mimoq.core.dialect_constants import TTS_MODEL
from mimoq.core.errors import CapacityDeferred
from mimoq.worker.limiter import RedisLimiter
from tests.conftest import start_redis_server
from tests.support.bench_scripts import BENCH, load_bench
from tests.support.polling import eventually
from tests.worker.test_limiter import SECONDS, T0, Clock

pytestmark = pytest.mark.redis


async def _seen(capture: Path, text: str) -> bool:
    return text in capture.read_text(errors="replace")


async def _attached(redis: Redis, capture: Path) -> bool:
    """Whether MONITOR has seen a command sent after it started (one more is sent here)."""
    await redis.echo("attached")
    return await _seen(capture, '"attached"')


async def test_asks_are_counted_per_job_with_what_each_decided(tmp_path: Path) -> None:
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is not installed (apt-get install redis-tools)")
    server = start_redis_server()
    redis = Redis.from_url(server.url)
    capture = tmp_path / "monitor.txt"
    with capture.open("wb") as out:
        monitor = subprocess.Popen(["redis-cli", "-p", str(server.port), "monitor"], stdout=out)
    try:
        await eventually(lambda: _attached(redis, capture), what="MONITOR attached")
        clock = Clock()
        limiter = RedisLimiter(SECONDS, redis, clock=clock, sleep=clock.sleep)
        await limiter.acquire(TTS_MODEL, job_id="first", lane="bulk", tenant="acme")
        with pytest.raises(CapacityDeferred):  # the next slot is a second away: a ticket
            await limiter.acquire(TTS_MODEL, job_id="second", lane="bulk", tenant="acme")
        # its worker takes it from arq's queue again (a claim), then asks at its slot
        await redis.zadd(wire.QUEUE_NAME, {"second": 1})
        claim = scripts.named("arq_claim")
        claim_keys = [arq_compat.IN_PROGRESS_PREFIX + "second", wire.QUEUE_NAME]
        assert await claim.run(redis, claim_keys, ["second", 2, 60_000, "token-a"])
        assert await claim.run(redis, claim_keys, ["second", 2, 60_000, "token-b"]) is None
        clock.now = T0 + 1.02  # back 20 ms after its slot
        await limiter.acquire(TTS_MODEL, job_id="second", lane="bulk", tenant="acme")
        with pytest.raises(CapacityDeferred):  # the slot after "second"'s
            await limiter.acquire(TTS_MODEL, job_id="probe", lane="interactive")
        await redis.echo("the end")
        await eventually(lambda: _seen(capture, '"the end"'), what="the capture's end")
    finally:
        monitor.terminate()
        monitor.wait()
        await redis.aclose()
        server.close()
    module = load_bench("limiter_asks")
    lines = capture.read_text(encoding="utf-8", errors="replace").splitlines()
    found = module.asks(lines)
    assert [(a.job, a.lane, a.model, a.decision()) for a in found] == [
        ("first", "bulk", TTS_MODEL, "G"),
        ("second", "bulk", TTS_MODEL, "T"),
        ("second", "bulk", TTS_MODEL, "G"),
        ("probe", "interactive", TTS_MODEL, "T"),
    ]
    counts = module.by_lane(found)
    assert counts == {
        ("bulk", TTS_MODEL): Counter({"G": 1, "TG": 1}),
        ("interactive", TTS_MODEL): Counter({"T": 1}),
    }
    taken = module.claims(lines)
    assert taken == Counter({"second": 1})  # the claim that found it held took nothing
    # "second" was granted 20 ms after its ticket's time; "first" held no ticket
    late = module.lateness(lines)
    assert late.keys() == {("bulk", TTS_MODEL)}
    assert late[("bulk", TTS_MODEL)] == pytest.approx([0.02], abs=1e-6)
    assert [a.respaced() for a in found] == [None, None, None, None]  # nothing held back
    rows = module.report(found, taken, 8)
    assert rows[0].split()[:2] == ["bulk", TTS_MODEL]
    assert "1.50 asks  0.50 claims a job" in rows[0]  # "first" was never claimed here
    # each call with the commands it ran: the asks' own, and the claims' (the one that took
    # "second": its SET and the queue's ZSCORE; the one that found it held: its SET)
    calls, commands = module.by_call(lines)
    assert commands["limiter_acquire"] - calls["limiter_acquire"] == sum(
        len(a.inner) for a in found
    )
    assert commands["arq_claim"] - calls["arq_claim"] == 3
    assert calls["plain:ZADD"] == 1 and commands["plain:ZADD"] == 1  # the test's own


def test_the_script_runs_on_a_capture(tmp_path: Path) -> None:
    capture = tmp_path / "empty.txt"
    capture.write_text('1.0 [0 127.0.0.1:1] "PING"\n')
    done = subprocess.run(
        [sys.executable, str(BENCH / "limiter_asks.py"), str(capture)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert done.stdout.splitlines() == ["0 asks", "due holders re-spaced: none"]


def test_a_holder_held_back_names_why() -> None:
    """From its count among the state's fields the call writes as it ends, or from an older
    capture's HINCRBY of the lanes hash."""
    module = load_bench("limiter_asks")
    lanes = '"HINCRBY" "mimoq:limit:{acct:mimo-v2.5-tts}:lanes"'
    state = '"HSET" "mimoq:limit:{acct:mimo-v2.5-tts}:state" "ptat" "1.5"'
    paced = module.Ask("j", "bulk", TTS_MODEL, [f'{lanes} "respaced:paced" "1"'])
    turn = module.Ask("j", "bulk", TTS_MODEL, [f'{lanes} "turns" "1"'])
    guard = module.Ask("j", "bulk", TTS_MODEL, [f'{state} "c:respaced:guard" "4" "tat" "2"'])
    turned = module.Ask("j", "bulk", TTS_MODEL, [f'{state} "c:turns" "3"'])
    assert [a.respaced() for a in (paced, turn, guard, turned)] == ["paced", None, "guard", None]


def _call(name: str, job: str, lane: str) -> str:
    """A client's FCALL line as MONITOR prints it (the call's JSON as its last argument)."""
    call = json.dumps({"job": job, "lane": lane}).replace('"', '\\"')
    state = '"mimoq:limit:{acct:mimo-v2.5-tts}:state"'
    return f'1.0 [0 127.0.0.1:1] "FCALL" "{name}_0123456789ab" "16" {state} "{call}"'


def test_turns_that_drop_a_ticket_are_counted_with_the_parks_they_made() -> None:
    """A ticket another job's turn took out of its lane is a drop (an ask's own ticket
    leaving at its grant is not), in an ask or an admission, whichever order the turn's
    count and the removal come in; a drop whose job the same call put back in its tenant's
    list was parked there and then."""
    module = load_bench("limiter_asks")
    key = '"mimoq:limit:{acct:mimo-v2.5-tts}'
    lua = "1.0 [0 lua] "
    lines = [
        _call("limiter_acquire", "l1", "interactive"),
        f'{lua}"HINCRBY" {key}:lanes" "turns" "1"',
        f'{lua}"ZREM" {key}:interactive_tickets" "f2"',
        f'{lua}"LPUSH" "mimoq:wait:mimo-v2.5-tts:interactive:tenant:flood" "f2"',
        f'{lua}"SET" "mimoq:cancel:l1" "ticket mimoq:limit:{{acct:mimo-v2.5-tts}}" "PX" "1"',
        _call("limiter_acquire", "b1", "bulk"),
        f'{lua}"ZREM" {key}:bulk_tickets" "b1"',
        f'{lua}"SET" "mimoq:cancel:b1" "granted" "PX" "1" "GET"',
        '1.0 [0 127.0.0.1:1] "FCALL" "limiter_admit_0123456789ab" "16"',
        f'{lua}"ZREM" {key}:interactive_tickets" "f3"',
        f'{lua}"HSET" {key}:state" "tat" "2.5" "c:turns" "2" "c:admitted" "4"',
        '1.0 [0 127.0.0.1:1] "PING"',
        f'{lua}"ZREM" {key}:interactive_tickets" "f4"',  # (no call that counted a turn)
    ]
    assert module.turn_drops(lines) == (Counter({"interactive": 2}), 1)
    found = module.asks(lines)
    assert module.decisions(found) == {"interactive": Counter("T"), "bulk": Counter("G")}


def test_holders_sent_round_again_are_counted_by_what_last_moved_their_ticket() -> None:
    """An ask that only moved its job's queue place (``q``) is put down to the call that had
    last written the job's ticket: a 429's re-plan, a tenant's turn, another job's ask, or
    the job's own ask; a later write replaces an earlier one."""
    module = load_bench("limiter_asks")
    key = '"mimoq:limit:{acct:mimo-v2.5-tts}'
    lua = "1.0 [0 lua] "
    marker = '"ticket mimoq:limit:{acct:mimo-v2.5-tts}" "PX" "1"'

    def given(job: str, at: str) -> list[str]:  # a ticket given by the job's own ask
        return [
            _call("limiter_acquire", job, "bulk"),
            f'{lua}"ZADD" {key}:bulk_tickets" "{at}" "{job}"',
            f'{lua}"SET" "mimoq:cancel:{job}" {marker}',
        ]

    def sent_round(job: str) -> list[str]:  # asked at its old slot, its queue place moved
        return [
            _call("limiter_acquire", job, "bulk"),
            f'{lua}"ZADD" "mimoq:queue" "XX" "CH" "1750" "{job}"',
        ]

    lines = [
        *given("b1", "2.0"),
        *given("b2", "3.0"),
        # a 429 moves both; then a turn (counted after its move) moves b2 again
        _call("limiter_rate_limited", "-", "-"),
        f'{lua}"ZADD" {key}:bulk_tickets" "XX" "5.0" "b1" "6.0" "b2"',
        _call("limiter_acquire", "l1", "bulk"),
        f'{lua}"ZADD" {key}:bulk_tickets" "9.0" "b2"',
        f'{lua}"HSET" {key}:state" "c:turns" "1"',
        # an interactive job's jump moves b3's
        *given("b3", "4.0"),
        _call("limiter_acquire", "i1", "interactive"),
        f'{lua}"ZADD" {key}:bulk_tickets" "8.0" "b3"',
        # b4's ticket is given, taken out at its grant, and given again by an admission
        *given("b4", "7.0"),
        _call("limiter_acquire", "b4", "bulk"),
        f'{lua}"ZREM" {key}:bulk_tickets" "x" "b4"',
        _call("limiter_admit", "-", "-"),
        f'{lua}"ZADD" {key}:bulk_tickets" "9.5" "b4"',
        *sent_round("b1"),
        *sent_round("b2"),
        *sent_round("b3"),
        *sent_round("b4"),
    ]
    assert module.sent_back(lines) == {
        "bulk": Counter(
            {
                "a 429's re-plan": 1,
                "a tenant's turn": 1,
                "an interactive job's ask": 1,
                "not moved": 1,
            }
        )
    }
