"""The wire contract: the total JSON deserializer, and the enqueue script on every backend."""

from __future__ import annotations

import json

import pytest
from arq.connections import ArqRedis
from redis.exceptions import ResponseError

from mimoq.core import wire


@pytest.mark.parametrize(
    ("raw", "task", "reason"),
    [
        (b'{"t":null,"f":"speech","a":[],"k":{"job":{"kind":"speech"}},"et":5}', "speech", None),
        (
            b'{"t":3,"f":"deliver_callback","a":[],"k":{"delivery":{}},"et":5}',
            "deliver_callback",
            None,
        ),
        (b"\x80\x04pickle", "invalid_job", "not valid UTF-8 JSON"),
        (b"{not json", "invalid_job", "not valid UTF-8 JSON"),
        (b"[1,2]", "invalid_job", "must be a JSON object"),
        (b'{"f":"rm -rf","k":{}}', "invalid_job", "unknown task"),
        (
            b'{"f":"speech","a":[1],"k":{"job":{}}}',
            "invalid_job",
            "exactly one keyword argument 'job'",
        ),
        (b'{"f":"speech","k":{"job":{},"x":1}}', "invalid_job", "exactly one keyword argument"),
        (b'{"f":"speech","k":"job"}', "invalid_job", "exactly one keyword argument"),
        (b'{"f":"transcription","k":{"delivery":{}}}', "invalid_job", "'job'"),
    ],
)
def test_deserialize_is_total(raw: bytes, task: str, reason: str | None) -> None:
    data = wire.deserialize(raw)
    assert data["f"] == task
    assert data["a"] == []
    assert isinstance(data["et"], int)
    if reason is not None:
        assert reason in data["k"]["reason"]
        assert set(data["k"]) == {"reason", "raw"}


def test_serializer_round_trips_and_is_plain_json() -> None:
    data = {"t": 1, "f": "speech", "a": [], "k": {"job": {"input": "你好"}}, "et": 1}
    raw = wire.serialize(data)
    assert json.loads(raw) == data
    assert "你好".encode() in raw  # readable by any language, not \\u-escaped


class TestEnqueueScript:
    async def enqueue(self, redis: ArqRedis, job_id: str, job: str, *extra: object) -> object:
        return await redis.eval(
            wire.enqueue_script(), 4, *wire.enqueue_keys(job_id), job_id, job, *extra
        )

    async def test_writes_an_arq_job_in_json(self, backend: ArqRedis) -> None:
        assert await self.enqueue(backend, "j1", '{"kind":"speech","input":"你好"}') == 1
        envelope = json.loads(await backend.get("arq:job:j1"))
        assert envelope["f"] == "speech" and envelope["a"] == [] and envelope["t"] is None
        assert envelope["k"] == {"job": {"kind": "speech", "input": "你好"}}
        score = await backend.zscore("mimoq:queue", "j1")
        assert score == envelope["et"]
        assert 0 < await backend.pttl("arq:job:j1") <= 86_400_000

    async def test_same_id_twice_is_a_no_op(self, backend: ArqRedis) -> None:
        assert await self.enqueue(backend, "j1", '{"kind":"speech","input":"a"}') == 1
        assert await self.enqueue(backend, "j1", '{"kind":"speech","input":"b"}') == 0
        assert json.loads(await backend.get("arq:job:j1"))["k"]["job"]["input"] == "a"

    async def test_a_finished_result_blocks_re_enqueue(self, backend: ArqRedis) -> None:
        await backend.set("mimoq:result:j2", "{}")
        assert await self.enqueue(backend, "j2", '{"kind":"speech","input":"a"}') == 0
        assert await backend.zcard("mimoq:queue") == 0

    async def test_defer_and_expiry(self, backend: ArqRedis) -> None:
        assert (
            await self.enqueue(
                backend, "j3", '{"kind":"transcription","file":"a.wav"}', 60_000, 120_000
            )
            == 1
        )
        envelope = json.loads(await backend.get("arq:job:j3"))
        assert await backend.zscore("mimoq:queue", "j3") == envelope["et"] + 60_000
        assert 60_000 < await backend.pttl("arq:job:j3") <= 120_000

    @pytest.mark.parametrize(
        ("job_id", "job", "error"),
        [
            ("j", "not json", "job must be a JSON object"),
            ("j", '{"input":"x"}', 'kind must be "speech" or "transcription"'),
            ("j", '{"kind":"embedding"}', "kind must be"),
            ("j", '{"kind":"speech","id":"other"}', "differs from ARGV[1]"),
            ("../x", '{"kind":"speech"}', "id must be"),
            ("", '{"kind":"speech"}', "id must be"),
        ],
    )
    async def test_refusals(self, backend: ArqRedis, job_id: str, job: str, error: str) -> None:
        with pytest.raises(ResponseError, match="invalid_request_error") as info:
            await self.enqueue(backend, job_id, job)
        assert error in str(info.value)
        assert await backend.zcard("mimoq:queue") == 0

    async def test_keys_must_match_the_id(self, backend: ArqRedis) -> None:
        with pytest.raises(ResponseError, match="KEYS must be"):
            await backend.eval(
                wire.enqueue_script(), 4, *wire.enqueue_keys("a"), "b", '{"kind":"speech"}'
            )


class TestEnqueueScriptArguments:
    """Hostile defer/expiry arguments get invalid_request_error, never a raw Redis error."""

    JOB = '{"kind":"speech","input":"x"}'

    async def enqueue(self, redis: ArqRedis, *extra: object) -> object:
        return await redis.eval(
            wire.enqueue_script(), 4, *wire.enqueue_keys("a1"), "a1", self.JOB, *extra
        )

    @pytest.mark.parametrize(
        ("extra", "fragment"),
        [
            (("1e300",), "ARGV[3] (defer) must be a whole number"),
            ((1e300,), "ARGV[3] (defer) must be a whole number"),
            (("-1e11",), "ARGV[3] (defer) must be a whole number"),
            (("nan",), "ARGV[3] (defer) must be a whole number"),
            (("inf",), "ARGV[3] (defer) must be a whole number"),
            (("0x10",), "ARGV[3] (defer) must be a whole number"),
            (("1.5",), "ARGV[3] (defer) must be a whole number"),
            (("soon",), "ARGV[3] (defer) must be a whole number"),
            ((31_536_000_001,), "ARGV[3] (defer) must be between"),
            ((-31_536_000_001,), "ARGV[3] (defer) must be between"),
            ((0, 0), "ARGV[4] (expiry) must be between 1"),
            ((0, -5), "ARGV[4] (expiry) must be between 1"),
            ((0, "nan"), "ARGV[4] (expiry) must be a whole number"),
            ((0, "1e300"), "ARGV[4] (expiry) must be a whole number"),
            ((60_000, 60_000), "must be longer than ARGV[3] (defer)"),
        ],
    )
    async def test_refused_plainly(
        self, backend: ArqRedis, extra: tuple[object, ...], fragment: str
    ) -> None:
        with pytest.raises(ResponseError) as info:
            await self.enqueue(backend, *extra)
        message = str(info.value)
        assert message.startswith("invalid_request_error: ") and fragment in message
        assert await backend.exists("arq:job:a1") == 0 and await backend.zcard("mimoq:queue") == 0

    @pytest.mark.parametrize(
        ("extra", "due_in_ms", "ttl_ms"),
        [
            ((), 0, 86_400_000),
            (("",), 0, 86_400_000),
            ((-31_536_000_000,), -31_536_000_000, 86_400_000),  # in the past: due at once
            ((31_536_000_000, 31_536_000_001), 31_536_000_000, 31_536_000_001),
            ((0, 1), 0, 1),
        ],
    )
    async def test_edges_accepted(
        self, backend: ArqRedis, extra: tuple[object, ...], due_in_ms: int, ttl_ms: int
    ) -> None:
        assert await self.enqueue(backend, *extra) == 1
        envelope = json.loads(await backend.get("arq:job:a1") or b"{}") if ttl_ms > 50 else None
        score = await backend.zscore("mimoq:queue", "a1")
        assert score is not None
        if envelope is not None:
            assert score == envelope["et"] + due_in_ms
            assert ttl_ms - 60_000 < await backend.pttl("arq:job:a1") <= ttl_ms


async def test_the_producer_refuses_an_unusable_defer_naming_it(redis: ArqRedis) -> None:
    from mimoq.core.errors import InvalidRequestError
    from mimoq.core.settings import Settings
    from mimoq.producer.client import Producer

    producer = Producer(redis, Settings())
    for defer_s in (float("nan"), float("inf"), 1e300, -1e11):
        with pytest.raises(InvalidRequestError) as info:
            await producer.enqueue({"kind": "speech", "input": "x"}, defer_s=defer_s)
        assert info.value.param == "defer_s"
    assert await redis.zcard("mimoq:queue") == 0
