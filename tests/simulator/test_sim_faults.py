"""faults: fault specs are checked per kind; the queue applies them in order, by match, N times."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from mimoq.sim.faults import EmptyAudio, ErrorBodyStyle, Fault, FaultKind, FaultQueue
from mimoq.sim.state import SimState


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "status", "status": 429, "retry_after": "2", "body": "wrapped"},
        {"kind": "status", "status": 402, "body": "unwrapped", "message": "no funds"},
        {"kind": "status", "status": 502, "body": "not_json", "times": 3, "match": "Hello"},
        {"kind": "status", "times": None},
        {"kind": "latency", "ms": 1500},
        {"kind": "malformed_base64"},
        {"kind": "empty_audio", "data": "missing"},
        {"kind": "disconnect", "after_bytes": 100},
        {"kind": "audio_bytes", "audio_bytes": 20_000_000},
    ],
)
def test_valid_specs(spec: dict[str, Any]) -> None:
    fault = Fault.model_validate(spec)
    assert fault.kind == spec["kind"]


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "explode"},
        {"kind": "status", "status": 200},
        {"kind": "status", "status": 600},
        {"kind": "status", "body": "xml"},
        {"kind": "status", "times": 0},
        {"kind": "latency"},  # needs ms
        {"kind": "latency", "ms": -5},
        {"kind": "latency", "ms": 10, "status": 500},  # status is not a latency field
        {"kind": "malformed_base64", "after_bytes": 3},
        {"kind": "empty_audio", "data": "zero"},
        {"kind": "audio_bytes"},
        {"kind": "disconnect", "colour": "red"},
    ],
)
def test_invalid_specs(spec: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Fault.model_validate(spec)


@pytest.mark.parametrize(
    ("given", "header"),
    [(2, "2"), ("2", "2"), (1.5, "1.5"), ("Wed, 21 Oct 2026 07:28:00 GMT", None)],
)
def test_retry_after_is_header_text(given: object, header: str | None) -> None:
    fault = Fault.model_validate({"kind": "status", "retry_after": given})
    assert fault.retry_after == (header or given)


def test_defaults() -> None:
    fault = Fault(kind=FaultKind.STATUS)
    assert (fault.times, fault.match, fault.status) == (1, None, 500)
    assert fault.body is ErrorBodyStyle.WRAPPED
    assert Fault(kind=FaultKind.EMPTY_AUDIO).data is EmptyAudio.EMPTY


def _queue(*specs: dict[str, Any]) -> FaultQueue:
    queue = FaultQueue()
    queue.add(Fault.model_validate(s) for s in specs)
    return queue


def test_faults_apply_in_order_and_are_used_up() -> None:
    queue = _queue({"kind": "status", "status": 429, "times": 2}, {"kind": "status", "status": 503})
    seen = [queue.take(b"{}", speech=True) for _ in range(4)]
    assert [f.status if f else None for f in seen] == [429, 429, 503, None]


def test_match_selects_requests_by_body_text() -> None:
    queue = _queue(
        {"kind": "status", "status": 500, "match": "sentence two"}, {"kind": "latency", "ms": 5}
    )
    assert queue.take(b'{"content":"sentence one"}', speech=True) == Fault(
        kind=FaultKind.LATENCY, ms=5
    )
    hit = queue.take('{"content":"sentence two, 你好"}'.encode(), speech=True)
    assert hit is not None and hit.status == 500
    assert queue.take(b'{"content":"sentence two"}', speech=True) is None


def test_non_ascii_match() -> None:
    queue = _queue({"kind": "status", "match": "你好"})
    assert queue.take(b"hello", speech=True) is None
    assert queue.take('{"c":"你好"}'.encode(), speech=True) is not None


def test_times_none_lasts_until_cleared() -> None:
    queue = _queue({"kind": "status", "status": 502, "times": None})
    assert all(queue.take(b"{}", speech=False) for _ in range(50))
    assert queue.describe() == [{"kind": "status", "status": 502, "times": None, "remaining": None}]
    queue.clear()
    assert queue.take(b"{}", speech=False) is None


@pytest.mark.parametrize("kind", ["malformed_base64", "audio_bytes"])
def test_speech_only_faults_wait_for_a_speech_request(kind: str) -> None:
    spec: dict[str, Any] = {"kind": kind}
    if kind == "audio_bytes":
        spec["audio_bytes"] = 10
    queue = _queue(spec, {"kind": "status"})
    assert queue.take(b"{}", speech=False) == Fault(kind=FaultKind.STATUS)  # skips the first
    taken = queue.take(b"{}", speech=True)
    assert taken is not None and taken.kind == kind


def test_describe_shows_remaining_uses() -> None:
    queue = _queue({"kind": "disconnect", "times": 3, "match": "x"})
    queue.take(b"x", speech=True)
    assert queue.describe() == [{"kind": "disconnect", "times": 3, "match": "x", "remaining": 2}]


def test_state_counts_applied_faults_and_reset_clears_everything() -> None:
    state = SimState()
    state.add_faults([Fault(kind=FaultKind.STATUS), Fault(kind=FaultKind.LATENCY, ms=1)])
    state.count_request("m")
    state.count_response(503)
    state.take_fault(b"{}", speech=True)
    stats = state.stats()
    assert stats["faults_applied"] == {"status": 1} and stats["faults_pending"] == 1
    assert stats["requests"] == {"m": 1} and stats["responses"] == {"503": 1}
    state.reset()
    stats = state.stats()
    assert stats["faults_pending"] == 0 and stats["total_requests"] == 0
    assert stats["faults_applied"] == {} and stats["responses"] == {}


def test_in_flight_gauge_tracks_the_maximum_and_survives_reset() -> None:
    state = SimState()
    for _ in range(3):
        state.enter()
    state.leave()
    assert (state.stats()["in_flight"], state.stats()["max_in_flight"]) == (2, 3)
    state.reset()  # requests still running stay counted
    assert (state.stats()["in_flight"], state.stats()["max_in_flight"]) == (2, 2)
