"""enqueue.lua's lanes and tenants: any language sets them, bad values are refused, bulk waits."""

from __future__ import annotations

import json

import pytest
from arq.connections import ArqRedis
from redis.exceptions import ResponseError

from mimoq.core import scripts, wire
from mimoq.core.errors import InvalidRequestError
from mimoq.core.jobs import JobStatus, parse_job
from mimoq.core.results import job_status


async def enqueue(redis: ArqRedis, job_id: str, job: dict[str, object], *extra: object) -> object:
    """What a foreign producer does: a raw EVAL of the script with the documented KEYS."""
    return await redis.eval(
        wire.enqueue_script(), 4, *wire.enqueue_keys(job_id), job_id, json.dumps(job), *extra
    )


SPEECH = {"kind": "speech", "input": "hi"}


async def test_interactive_is_the_default_and_goes_straight_to_the_queue(
    backend: ArqRedis,
) -> None:
    assert await enqueue(backend, "i1", SPEECH) == 1
    assert await enqueue(backend, "i2", {**SPEECH, "priority": "interactive", "tenant": "a"}) == 1
    assert await backend.zcard(wire.QUEUE_NAME) == 2
    assert not await backend.exists(wire.WAIT_MODELS_KEY)


async def test_bulk_jobs_wait_per_model_and_tenant_after_the_first(backend: ArqRedis) -> None:
    bulk = {**SPEECH, "priority": "bulk"}
    for i in range(3):
        assert await enqueue(backend, f"a{i}", {**bulk, "tenant": "team-a"}) == 1
    assert await enqueue(backend, "b0", {**bulk, "tenant": "team-b"}) == 1
    assert await enqueue(backend, "n0", bulk) == 1  # no tenant: the "_" tenant
    assert await enqueue(backend, "v0", {**bulk, "model": "mimo-v2.5-tts-voicedesign"}) == 1
    # the first bulk job of an idle model starts its look-ahead at once
    assert await backend.zrange(wire.QUEUE_NAME, 0, -1) == [b"a0", b"v0"]
    tts = "mimo-v2.5-tts"
    assert await backend.lrange(wire.wait_list_key(tts, "team-a"), 0, -1) == [b"a1", b"a2"]
    assert await backend.lrange(wire.wait_list_key(tts, "team-b"), 0, -1) == [b"b0"]
    assert await backend.lrange(wire.wait_list_key(tts, None), 0, -1) == [b"n0"]
    assert await backend.lrange(wire.wait_ring_key(tts), 0, -1) == [b"team-a", b"team-b", b"_"]
    assert await backend.smembers(wire.WAIT_MODELS_KEY) == {tts.encode()}
    # the id is taken while it waits, and its status says so truthfully
    assert await enqueue(backend, "a1", {**bulk, "tenant": "team-a"}) == 0
    status = await job_status(backend, "a1")
    assert status.status is JobStatus.queued and status.to_dict()["waiting"] is True
    assert (await job_status(backend, "a0")).to_dict().get("waiting") is None


async def test_a_model_is_named_waiting_again_by_the_first_job_to_wait_after_its_rings_emptied(
    backend: ArqRedis,
) -> None:
    """enqueue.lua adds the model to the waiting models with a tenant's first waiting job
    only: an admission round that emptied the model's rings took it out (forget_waiting_model),
    and the next job to wait must put it back, or no admission round would look at it."""
    bulk = {**SPEECH, "priority": "bulk", "tenant": "team-a"}
    tts = "mimo-v2.5-tts"
    for i in range(3):  # the first starts the look-ahead; two wait
        assert await enqueue(backend, f"a{i}", bulk) == 1
    # what admission does once it has taken every waiting job of the model
    await backend.delete(wire.wait_list_key(tts, "team-a"), wire.wait_ring_key(tts))
    await backend.srem(wire.WAIT_MODELS_KEY, tts)
    assert await enqueue(backend, "a3", bulk) == 1
    assert await backend.smembers(wire.WAIT_MODELS_KEY) == {tts.encode()}
    assert await backend.lrange(wire.wait_ring_key(tts), 0, -1) == [b"team-a"]


async def test_a_deferred_bulk_job_goes_to_the_queue_at_its_time(backend: ArqRedis) -> None:
    assert await enqueue(backend, "d", {**SPEECH, "priority": "bulk"}, 60_000) == 1
    envelope = json.loads(await backend.get("arq:job:d"))
    assert await backend.zscore(wire.QUEUE_NAME, "d") == envelope["et"] + 60_000


@pytest.mark.parametrize(
    ("job", "error"),
    [
        (
            {**SPEECH, "priority": "urgent"},
            'priority must be "interactive" (the default) or "bulk"',
        ),
        ({**SPEECH, "priority": None}, "priority must be"),
        ({**SPEECH, "priority": 1}, "priority must be"),
        ({**SPEECH, "tenant": "../etc"}, "tenant must be 1-64 characters"),
        ({**SPEECH, "tenant": "a" * 65}, "tenant must be 1-64 characters"),
        ({**SPEECH, "tenant": "a b"}, "tenant must be"),
        ({**SPEECH, "tenant": ["a"]}, "tenant must be"),
        ({**SPEECH, "tenant": ""}, "tenant must be"),
        ({**SPEECH, "priority": "bulk", "model": "gpt-4o"}, "model must be a speech model"),
        ({**SPEECH, "priority": "bulk", "model": "mimo-v2.5-asr"}, "model must be a speech"),
    ],
)
async def test_bad_lanes_and_tenants_are_refused_and_nothing_is_written(
    backend: ArqRedis, job: dict[str, object], error: str
) -> None:
    with pytest.raises(ResponseError, match="invalid_request_error") as info:
        await enqueue(backend, "bad", job)
    assert error in str(info.value)
    assert await backend.dbsize() == 0


async def test_a_null_tenant_is_no_tenant(backend: ArqRedis) -> None:
    assert await enqueue(backend, "x", {**SPEECH, "tenant": None}) == 1
    assert parse_job({**SPEECH, "tenant": None}).tenant is None


@pytest.mark.parametrize(
    ("fields", "param", "fragment"),
    [
        ({"priority": "urgent"}, "priority", "'interactive'"),
        ({"tenant": "a/b"}, "tenant", "A-Z a-z 0-9"),
    ],
)
def test_the_job_model_refuses_the_same_with_the_field_named(
    fields: dict[str, object], param: str, fragment: str
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_job({**SPEECH, **fields})
    assert info.value.param == param and fragment in info.value.message


def test_lane_and_tenant_round_trip_in_the_model() -> None:
    job = parse_job({**SPEECH, "priority": "bulk", "tenant": "team-a"})
    assert (job.priority, job.tenant) == ("bulk", "team-a")
    assert parse_job(SPEECH).priority == "interactive"


async def test_an_interactive_flood_waits_its_turn_past_the_first_sixteen(
    backend: ArqRedis,
) -> None:
    tts = "mimo-v2.5-tts"
    n = wire.INTERACTIVE_DIRECT + 3
    for i in range(n):
        assert await enqueue(backend, f"f{i}", {**SPEECH, "tenant": "flood"}) == 1
    # the tenant's first sixteen go straight in; the rest wait outside arq's queue
    assert await backend.zcard(wire.QUEUE_NAME) == wire.INTERACTIVE_DIRECT
    admitted = wire.interactive_admitted_key(tts, "flood")
    assert await backend.zcard(admitted) == wire.INTERACTIVE_DIRECT
    waiting = await backend.lrange(wire.wait_list_key(tts, "flood", "interactive"), 0, -1)
    assert waiting == [f"f{i}".encode() for i in range(wire.INTERACTIVE_DIRECT, n)]
    assert await backend.lrange(wire.wait_ring_key(tts, "interactive"), 0, -1) == [b"flood"]
    assert await backend.smembers(wire.WAIT_MODELS_KEY) == {tts.encode()}
    assert (await job_status(backend, f"f{n - 1}")).to_dict()["waiting"] is True
    # another tenant is not behind the flood: its job goes straight in
    assert await enqueue(backend, "light", {**SPEECH, "tenant": "light"}) == 1
    assert await backend.zscore(wire.QUEUE_NAME, "light") is not None
    # nothing of the bulk lane moved, and a deferred interactive job keeps its time
    assert not await backend.exists(wire.wait_ring_key(tts))
    assert await enqueue(backend, "later", {**SPEECH, "tenant": "flood"}, 60_000) == 1
    assert await backend.zscore(wire.QUEUE_NAME, "later") is not None


async def test_while_the_lane_is_marked_over_its_share_one_job_a_tenant_goes_straight(
    backend: ArqRedis,
) -> None:
    """The limiter marks the lane when it parks a job (limiter_acquire.lua): a tenant's next
    jobs wait in its list, as admission keeps them, instead of being picked to be parked."""
    tts = "mimo-v2.5-tts"
    await backend.set(wire.interactive_over_share_key(tts), 1, px=1000)
    for i in range(3):
        assert await enqueue(backend, f"m{i}", {**SPEECH, "tenant": "mark"}) == 1
    # the first goes straight (none of its tenant's was there), the others wait in order
    assert await backend.zrange(wire.QUEUE_NAME, 0, -1) == [b"m0"]
    waiting = await backend.lrange(wire.wait_list_key(tts, "mark", "interactive"), 0, -1)
    assert waiting == [b"m1", b"m2"]
    assert await backend.lrange(wire.wait_ring_key(tts, "interactive"), 0, -1) == [b"mark"]
    # the mark is per model: another model's jobs go straight up to sixteen as before
    asr_job = {"kind": "transcription", "input": "https://example.com/a.wav", "tenant": "mark"}
    for i in range(3):
        assert await enqueue(backend, f"a{i}", asr_job) == 1
    assert await backend.zcard(wire.QUEUE_NAME) == 4
    # gone (it lives about a second), a tenant whose list is empty goes straight again
    await backend.delete(wire.interactive_over_share_key(tts))
    assert await enqueue(backend, "solo1", {**SPEECH, "tenant": "solo"}) == 1
    assert await enqueue(backend, "solo2", {**SPEECH, "tenant": "solo"}) == 1
    assert await backend.zscore(wire.QUEUE_NAME, "solo2") is not None


def test_enqueue_spells_the_mark_as_wire_does() -> None:
    source = scripts.source("enqueue")
    suffix = wire.INTERACTIVE_OVER_SHARE_SUFFIX
    lane, name = suffix.rsplit(":", 1)
    assert f"local OVER_SHARE = '{name}'" in source
    assert wire.interactive_over_share_key("m") == f"{wire.WAIT_PREFIX}m:{lane}:{name}"
    assert "wait = wait .. 'interactive:'" in source and "wait .. OVER_SHARE" in source
