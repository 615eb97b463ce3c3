"""What operators see of the scheduler: inspect and limits per lane and tenant, bounded metrics."""

from __future__ import annotations

import pytest
from arq.connections import ArqRedis

from mimoq.cli.inspection import inspect, render
from mimoq.core.settings import Settings
from mimoq.worker import metrics
from mimoq.worker.limiter import LimiterConfig, RedisLimiter
from mimoq.worker.limiter.admission import Admitter
from mimoq.worker.limiter.config import KEY_PARTS, limiter_keys
from tests.worker.sched_sim import Fleet, bulk, interactive

TTS = "mimo-v2.5-tts"
CONFIG = LimiterConfig(account="acct", window_s=10.0, default_rpm=100, margin_s=0.1)
#: Grants back to back: for counting grants, not pacing them.
ROOMY_ACCT = LimiterConfig(account="acct", window_s=60, default_rpm=100_000, burst=1000)


def test_tenant_labels_are_capped_and_the_rest_pooled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_tenant_labels", set())
    labels = [metrics.tenant_label(f"t{i}") for i in range(metrics.MAX_TENANT_LABELS + 5)]
    assert labels[: metrics.MAX_TENANT_LABELS] == [f"t{i}" for i in range(20)]
    assert set(labels[metrics.MAX_TENANT_LABELS :]) == {metrics.OTHER_TENANTS}
    assert metrics.tenant_label("t3") == "t3"  # a known tenant keeps its label
    assert metrics.tenant_label(None) == metrics.tenant_label("_") == metrics.NO_TENANT_LABEL


def test_the_waiting_gauge_zeroes_tenants_that_emptied(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_tenant_labels", set())
    metrics.waiting("m-test", {"a": 5, "b": 2})
    metrics.waiting("m-test", {"a": 3})
    assert metrics.BULK_WAITING.labels("m-test", "a")._value.get() == 3
    assert metrics.BULK_WAITING.labels("m-test", "b")._value.get() == 0


@pytest.mark.redis
async def test_inspect_and_limits_show_depth_and_grants_per_lane_and_tenant(
    redis: ArqRedis,
) -> None:
    fleet = Fleet(redis, CONFIG)
    await fleet.enqueue_many([(f"a{i}", bulk("team-a")) for i in range(200)])
    await fleet.enqueue_many([(f"b{i}", bulk("team-b")) for i in range(50)])
    fleet.arrive(fleet.now + 0.5, "hurry", interactive())
    await fleet.run_until(lambda: len(fleet.grants) >= 40)
    settings = Settings(limiter={"account": "acct", "window_s": 10.0})

    report = await inspect(redis, settings, limit=5)
    waiting = report["waiting"][TTS]
    granted = {t: sum(g.tenant == t for g in fleet.grants) for t in ("team-a", "team-b")}
    admitted = report["limiters"]["limiters"][0]["lanes"]["admitted"]
    # every job is either granted, admitted (in the queue) or waiting: nothing is lost
    assert waiting["team-a"] + waiting["team-b"] + sum(granted.values()) + admitted == 250
    (tts,) = [s for s in report["limiters"]["limiters"] if s["model"] == TTS]
    assert tts["lanes"]["grants"] == {"interactive": 1, "bulk": len(fleet.grants) - 1}
    assert tts["lanes"]["tenant_grants"]["team-a"] == granted["team-a"]
    assert tts["lanes"]["tenant_grants"]["team-b"] == granted["team-b"]
    assert abs(granted["team-a"] - granted["team-b"]) <= 3  # tenants' turns
    # the tickets held now, per lane and tenant, are the ones in the ticket queue
    held = tts["lanes"]["tenant_tickets"]["bulk"]
    assert sum(held.values()) == tts["lanes"]["tickets"]["bulk"] > 0
    assert set(held) <= {"team-a", "team-b"}
    text = render(report)
    assert "bulk waiting for admission" in text and "team-b" in text
    assert f"team-a:{granted['team-a']}" in text
    assert "b " + ", ".join(f"{t}:{n}" for t, n in sorted(held.items())) in text


@pytest.mark.redis
async def test_the_admission_round_restarts_a_model_whose_admitted_jobs_vanished(
    redis: ArqRedis,
) -> None:
    """Admitted jobs that never ask for a slot (they failed first) stop holding the
    look-ahead after two windows, and the workers' round admits the next ones."""
    fleet = Fleet(redis, CONFIG)
    await fleet.enqueue_many([(f"a{i}", bulk("t")) for i in range(100)])
    await fleet.limiter.admit(TTS)
    queued = await redis.zcard("mimoq:queue")
    assert queued >= 2
    await redis.delete("mimoq:queue")  # the admitted jobs vanish without asking for a slot
    admitter = Admitter(fleet.limiter, interval_s=0.0)
    assert await admitter.tick(redis) == 0  # still counted as the look-ahead
    fleet.now += 2 * CONFIG.window_s + 1
    assert await admitter.tick(redis) == queued  # restarted


@pytest.mark.redis
async def test_an_interactive_flood_is_visible_and_drains_through_grants(
    redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "_tenant_labels", set())
    fleet = Fleet(redis, CONFIG)
    await fleet.enqueue_many([(f"f{i}", interactive("flood")) for i in range(20)])
    settings = Settings(limiter={"account": "acct", "window_s": 10.0})
    report = await inspect(redis, settings, limit=5)
    assert report["waiting_interactive"] == {TTS: {"flood": 4}}
    assert report["waiting"] == {TTS: {}}  # the bulk lane has nothing waiting
    assert "interactive waiting for admission (4)" in render(report)
    # the admission round samples both lanes into their gauges
    await Admitter(fleet.limiter).tick(redis)
    assert metrics.INTERACTIVE_WAITING.labels(TTS, "flood")._value.get() == 4
    # every grant of the tenant admits its next job: all 20 finish, nothing is left waiting
    await fleet.run_until(lambda: len(fleet.grants) == 20)
    assert sorted(g.job_id for g in fleet.grants) == sorted(f"f{i}" for i in range(20))
    after = await inspect(redis, settings, limit=5)
    assert after["waiting_interactive"] == {}
    assert "interactive waiting for admission" not in render(after)


@pytest.mark.redis
async def test_grant_counts_are_one_field_per_lane_and_tenant_and_older_fields_still_count(
    redis: ArqRedis,
) -> None:
    """A grant counts itself once, under its lane and tenant (issue #22: it was two HINCRBYs,
    one per lane, one per tenant); the snapshot sums that field into both views, and the
    fields an older worker wrote (``lane:bulk``, ``tenant:t-a``) still add up. The other
    counters are fields of the state hash (``c:turns``, ...), and what an older worker
    counted in the lanes hash adds to them."""
    limiter = RedisLimiter(ROOMY_ACCT, redis, clock=lambda: 1000.0)
    for i, (lane, tenant) in enumerate(
        [("bulk", "t-a"), ("bulk", "t-a"), ("interactive", "t-a"), ("bulk", None)]
    ):
        await limiter.acquire(TTS, job_id=f"j{i}", lane=lane, tenant=tenant)
    keys = limiter_keys("acct", TTS)
    lanes_key, state_key = keys[KEY_PARTS.index("lanes")], keys[KEY_PARTS.index("state")]
    fields = {k.decode(): int(v) for k, v in (await redis.hgetall(lanes_key)).items()}
    assert fields == {"g:bulk:t-a": 2, "g:interactive:t-a": 1, "g:bulk:_": 1}
    # a fleet mid-upgrade: an older worker's per-lane and per-tenant counts, and its turns
    await redis.hset(
        lanes_key, mapping={"lane:bulk": 5, "tenant:t-a": 3, "tenant:t-b": 2, "turns": 4}
    )
    await redis.hset(state_key, "c:turns", 2)
    lanes = (await limiter.snapshot(TTS)).lanes
    assert lanes["grants"] == {"bulk": 3 + 5, "interactive": 1}
    assert lanes["turns"] == 4 + 2
    assert lanes["tenant_grants"] == {"t-a": 3 + 3, "_": 1, "t-b": 2}
