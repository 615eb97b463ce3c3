"""The simulator's upstream quota rejects at exactly the right boundaries (injected clock)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import pytest

from mimoq.core.dialect_constants import ASR_MODEL, TTS_MODEL, VOICECLONE_MODEL
from mimoq.sim.quota import (
    QuotaAlgorithm,
    QuotaConfig,
    SimQuota,
    TokenAccounting,
)
from mimoq.sim.quota_protocol import Admission, QuotaPolicy

SLIDING = QuotaAlgorithm.SLIDING_WINDOW
BUCKET = QuotaAlgorithm.TOKEN_BUCKET


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


#: One request: (clock time, model, estimated tokens, expected retry-after or None = admitted)
Step = tuple[float, str, int, float | None]

CASES: list[tuple[str, QuotaConfig, list[Step]]] = [
    (
        "sliding: a burst fills the window; the half-open window frees the slot exactly at +W",
        QuotaConfig(window_s=10, default_rpm=3, algorithm=SLIDING),
        [
            (0, TTS_MODEL, 0, None),
            (0, TTS_MODEL, 0, None),
            (0, TTS_MODEL, 0, None),
            (0, TTS_MODEL, 0, 10.0),
            (9.999, TTS_MODEL, 0, 0.001),
            (10, TTS_MODEL, 0, None),
        ],
    ),
    (
        "sliding: spread requests; the wait names when the oldest blocking one leaves",
        QuotaConfig(window_s=10, default_rpm=3, algorithm=SLIDING),
        [
            (0, TTS_MODEL, 0, None),
            (4, TTS_MODEL, 0, None),
            (8, TTS_MODEL, 0, None),
            (9, TTS_MODEL, 0, 1.0),
            (10, TTS_MODEL, 0, None),
            (11, TTS_MODEL, 0, 3.0),
            (14, TTS_MODEL, 0, None),
        ],
    ),
    (
        "sliding: each model has its own quota",
        QuotaConfig(window_s=10, default_rpm=1, rpm={VOICECLONE_MODEL: 2}, algorithm=SLIDING),
        [
            (0, TTS_MODEL, 0, None),
            (0, TTS_MODEL, 0, 10.0),
            (0, VOICECLONE_MODEL, 0, None),
            (1, VOICECLONE_MODEL, 0, None),
            (2, VOICECLONE_MODEL, 0, 8.0),
        ],
    ),
    (
        "sliding: tokens fit up to the limit; the wait is until enough tokens leave",
        QuotaConfig(window_s=10, default_rpm=100, tpm={ASR_MODEL: 100}, algorithm=SLIDING),
        [
            (0, ASR_MODEL, 60, None),
            (1, ASR_MODEL, 50, 9.0),
            (1, ASR_MODEL, 40, None),
            (2, ASR_MODEL, 1, 8.0),
            (10, ASR_MODEL, 50, None),
            (10, ASR_MODEL, 11, 1.0),
            (10, ASR_MODEL, 10, None),
        ],
    ),
    (
        "sliding: a call bigger than the token quota goes into an empty window only",
        QuotaConfig(window_s=10, default_rpm=100, tpm={ASR_MODEL: 100}, algorithm=SLIDING),
        [
            (0, ASR_MODEL, 150, None),
            (1, ASR_MODEL, 1, 9.0),
            (5, ASR_MODEL, 150, 5.0),
            (10, ASR_MODEL, 150, None),
        ],
    ),
    (
        "sliding: the token limit applies to its model only",
        QuotaConfig(window_s=10, default_rpm=100, tpm={ASR_MODEL: 100}, algorithm=SLIDING),
        [(0, ASR_MODEL, 100, None), (0, TTS_MODEL, 5000, None), (0, ASR_MODEL, 1, 10.0)],
    ),
    (
        "bucket: starts full, then refills one request per W/N seconds",
        QuotaConfig(window_s=3, default_rpm=3, algorithm=BUCKET),
        [
            (0, TTS_MODEL, 0, None),
            (0, TTS_MODEL, 0, None),
            (0, TTS_MODEL, 0, None),
            (0, TTS_MODEL, 0, 1.0),
            (0.5, TTS_MODEL, 0, 0.5),
            (1, TTS_MODEL, 0, None),
            (1, TTS_MODEL, 0, 1.0),
            (2, TTS_MODEL, 0, None),
        ],
    ),
    (
        "bucket: a long idle spell refills no more than the capacity",
        QuotaConfig(window_s=3, default_rpm=2, algorithm=BUCKET),
        [
            (0, TTS_MODEL, 0, None),
            (0, TTS_MODEL, 0, None),
            (100, TTS_MODEL, 0, None),
            (100, TTS_MODEL, 0, None),
            (100, TTS_MODEL, 0, 1.5),
        ],
    ),
    (
        "bucket: tokens refill at T per window; the wait covers the missing tokens",
        QuotaConfig(window_s=10, default_rpm=100, tpm={ASR_MODEL: 100}, algorithm=BUCKET),
        [
            (0, ASR_MODEL, 60, None),
            (0, ASR_MODEL, 50, 1.0),
            (1, ASR_MODEL, 50, None),
            (1, ASR_MODEL, 150, 10.0),
            (11, ASR_MODEL, 150, None),
            (11, ASR_MODEL, 1, 5.1),
        ],
    ),
]


@pytest.mark.parametrize(("name", "config", "steps"), CASES, ids=[c[0] for c in CASES])
def test_admission_boundaries(name: str, config: QuotaConfig, steps: list[Step]) -> None:
    clock = Clock()
    quota = SimQuota(config, clock=clock)
    for at, model, tokens, expected in steps:
        clock.now = at
        outcome = quota.admit(model, tokens)
        if expected is None:
            assert not isinstance(outcome, float), f"t={at} {model}: rejected, wait {outcome}"
            outcome.release()
        else:
            assert isinstance(outcome, float), f"t={at} {model}: admitted, expected a 429"
            assert outcome == pytest.approx(expected, abs=1e-6), f"t={at} {model}"
    rejected = sum(1 for *_, expected in steps if expected is not None)
    assert quota.stats()["rejected_total"] == rejected


def test_rejections_are_counted_by_model_and_reason() -> None:
    clock = Clock()
    quota = SimQuota(QuotaConfig(window_s=10, default_rpm=1, tpm={ASR_MODEL: 10}), clock=clock)
    assert not isinstance(quota.admit(TTS_MODEL, 0), float)
    assert isinstance(quota.admit(TTS_MODEL, 0), float)
    assert not isinstance(quota.admit(ASR_MODEL, 10), float)
    assert isinstance(quota.admit(ASR_MODEL, 10), float)
    stats = quota.stats()
    assert stats["admitted"] == {TTS_MODEL: 1, ASR_MODEL: 1}
    assert stats["rejected"] == {TTS_MODEL: {"requests": 1}, ASR_MODEL: {"requests": 1}}
    quota.reset()
    assert quota.stats()["rejected_total"] == 0
    assert not isinstance(quota.admit(TTS_MODEL, 0), float)  # reset opened a new window


def test_token_rejection_reason() -> None:
    quota = SimQuota(QuotaConfig(window_s=10, tpm={ASR_MODEL: 10}), clock=Clock())
    assert not isinstance(quota.admit(ASR_MODEL, 8), float)
    assert isinstance(quota.admit(ASR_MODEL, 8), float)
    assert quota.stats()["rejected"] == {ASR_MODEL: {"tokens": 1}}


def test_concurrency_cap_counts_calls_in_flight_across_models() -> None:
    quota = SimQuota(QuotaConfig(max_concurrency=2), clock=Clock())
    first, second = quota.admit(TTS_MODEL, 0), quota.admit(ASR_MODEL, 5)
    assert not isinstance(first, float) and not isinstance(second, float)
    assert quota.admit(TTS_MODEL, 0) == 1.0
    first.release()
    first.release()  # a second release must not free another slot
    third = quota.admit(TTS_MODEL, 0)
    assert not isinstance(third, float)
    assert isinstance(quota.admit(TTS_MODEL, 0), float)
    stats = quota.stats()
    assert stats["in_flight"] == 2 and stats["max_in_flight"] == 2
    assert stats["rejected"] == {TTS_MODEL: {"concurrency": 2}}


@pytest.mark.parametrize("algorithm", [SLIDING, BUCKET])
def test_completion_accounting_charges_reported_usage_not_estimates(
    algorithm: QuotaAlgorithm,
) -> None:
    clock = Clock()
    config = QuotaConfig(
        window_s=10, tpm={ASR_MODEL: 100}, algorithm=algorithm,
        token_accounting=TokenAccounting.COMPLETION,
    )  # fmt: skip
    quota = SimQuota(config, clock=clock)
    # estimates alone are never charged: both fit although together they exceed the limit
    assert not isinstance(quota.admit(ASR_MODEL, 60), float)
    assert not isinstance(quota.admit(ASR_MODEL, 60), float)
    quota.record_usage(ASR_MODEL, 90)
    assert isinstance(quota.admit(ASR_MODEL, 20), float)
    assert not isinstance(quota.admit(ASR_MODEL, 10), float)
    assert quota.stats()["usage_tokens"] == {ASR_MODEL: 90}


def test_admission_accounting_ignores_usage_for_the_quota() -> None:
    quota = SimQuota(QuotaConfig(window_s=10, tpm={ASR_MODEL: 100}), clock=Clock())
    assert not isinstance(quota.admit(ASR_MODEL, 50), float)
    quota.record_usage(ASR_MODEL, 500)
    assert not isinstance(quota.admit(ASR_MODEL, 50), float)
    assert quota.stats()["usage_tokens"] == {ASR_MODEL: 500}


@pytest.mark.parametrize("send", [True, False])
def test_retry_after_switch_is_exposed_to_the_app(send: bool) -> None:
    assert SimQuota(QuotaConfig(send_retry_after=send)).send_retry_after is send


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window_s": 0},
        {"default_rpm": 0},
        {"rpm": {TTS_MODEL: -1}},
        {"tpm": {ASR_MODEL: 0}},
        {"max_concurrency": 0},
    ],
)
def test_nonsense_quotas_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        QuotaConfig(**kwargs)


@pytest.mark.parametrize("algorithm", [SLIDING, BUCKET])
def test_threads_admitting_at_once_never_exceed_the_quota(algorithm: QuotaAlgorithm) -> None:
    quota = SimQuota(QuotaConfig(window_s=60, default_rpm=50, algorithm=algorithm), clock=Clock())
    admitted: list[Admission] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def hammer() -> None:
        start.wait()
        for _ in range(40):
            outcome = quota.admit(TTS_MODEL, 0)
            if not isinstance(outcome, float):
                with lock:
                    admitted.append(outcome)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 50
    assert quota.stats()["rejected_total"] == 8 * 40 - 50


def test_satisfies_the_simulator_protocol() -> None:
    policy: QuotaPolicy = SimQuota()
    assert not isinstance(policy.admit(TTS_MODEL, 0), float)
