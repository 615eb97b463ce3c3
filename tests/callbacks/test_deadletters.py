"""Dead-letter storage: one JSON record per delivery plus a time-scored index."""

from __future__ import annotations

import json
import time

import pytest
from arq.connections import ArqRedis

from mimoq.core import deadletters, wire
from mimoq.core.deadletters import DeadLetter, DeadLetterReason
from mimoq.core.webhooks import Delivery

pytestmark = pytest.mark.redis

#: Dead letters older than the retention (30 days) are dropped: the fixtures die "now".
NOW = round(time.time())
TTL = 30 * 86_400


def letter(
    n: int,
    *,
    job: str | None = None,
    reason: DeadLetterReason = DeadLetterReason.exhausted,
    dead_at: float | None = None,
) -> DeadLetter:
    job_id = job or f"job-{n}"
    return DeadLetter(
        delivery=Delivery(
            delivery_id=f"cb-{job_id}",
            job_id=job_id,
            url=f"https://u:p@hooks.example/cb/{n}?token=t{n}",
            headers={"Authorization": f"Bearer secret-{n}"},
            body=f'{{"n":{n}}}',
            created_at=1000.0 + n,
        ),
        reason=reason,
        attempts=8,
        last_error="HTTP 500",
        last_status=500,
        dead_at=dead_at if dead_at is not None else NOW + n,
    )


async def test_put_get_remove_round_trip(redis: ArqRedis) -> None:
    original = letter(1)
    await deadletters.put(redis, original, ttl_s=TTL)

    raw = await redis.get(wire.DEAD_LETTER_PREFIX + "cb-job-1")
    assert json.loads(raw)["reason"] == "exhausted"  # plain JSON, readable from any language
    assert await redis.zscore(wire.DEAD_LETTER_INDEX, "cb-job-1") == NOW + 1
    assert await deadletters.get(redis, "cb-job-1") == original

    assert await deadletters.remove(redis, "cb-job-1") is True
    assert await deadletters.get(redis, "cb-job-1") is None
    assert await redis.zcard(wire.DEAD_LETTER_INDEX) == 0
    assert await deadletters.remove(redis, "cb-job-1") is False


async def test_put_again_overwrites_and_rescores(redis: ArqRedis) -> None:
    await deadletters.put(redis, letter(1, dead_at=NOW + 10), ttl_s=TTL)
    await deadletters.put(
        redis, letter(1, dead_at=NOW + 20, reason=DeadLetterReason.gone), ttl_s=TTL
    )
    got = await deadletters.get(redis, "cb-job-1")
    assert got is not None and got.reason is DeadLetterReason.gone
    assert await redis.zrange(wire.DEAD_LETTER_INDEX, 0, -1, withscores=True) == [
        (b"cb-job-1", NOW + 20)
    ]


async def test_iterate_is_newest_first_and_pages_past_one_batch(redis: ArqRedis) -> None:
    for n in range(450):  # more than two pages of the index
        await deadletters.put(redis, letter(n), ttl_s=TTL)
    ids = [x.delivery_id async for x in deadletters.iterate(redis)]
    assert ids == [f"cb-job-{n}" for n in reversed(range(450))]


@pytest.mark.parametrize(
    ("job_id", "reason", "expected"),
    [
        (None, None, ["cb-c", "cb-b", "cb-a"]),
        ("b", None, ["cb-b"]),
        (None, DeadLetterReason.gone, ["cb-c", "cb-a"]),
        ("a", DeadLetterReason.gone, ["cb-a"]),
        ("b", DeadLetterReason.gone, []),
    ],
)
async def test_iterate_filters(
    redis: ArqRedis, job_id: str | None, reason: DeadLetterReason | None, expected: list[str]
) -> None:
    await deadletters.put(redis, letter(1, job="a", reason=DeadLetterReason.gone), ttl_s=TTL)
    await deadletters.put(
        redis, letter(2, job="b", reason=DeadLetterReason.final_status), ttl_s=TTL
    )
    await deadletters.put(redis, letter(3, job="c", reason=DeadLetterReason.gone), ttl_s=TTL)
    got = [x.delivery_id async for x in deadletters.iterate(redis, job_id=job_id, reason=reason)]
    assert got == expected


async def test_iterate_skips_index_entries_whose_record_is_gone(redis: ArqRedis) -> None:
    await deadletters.put(redis, letter(1), ttl_s=TTL)
    await redis.zadd(wire.DEAD_LETTER_INDEX, {"cb-vanished": 5000.0})
    assert [x.delivery_id async for x in deadletters.iterate(redis)] == ["cb-job-1"]


def test_summary_hides_body_header_values_and_url_secrets() -> None:
    summary = letter(7).summary()
    assert summary["target"] == "https://hooks.example:443"
    text = json.dumps(summary)
    for hidden in ("secret-7", "token=t7", "u:p@", '{"n":7}', "/cb/7"):
        assert hidden not in text
