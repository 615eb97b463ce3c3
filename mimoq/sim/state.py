"""The simulator's mutable run state: pending faults, counters and its seeded RNG."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mimoq.sim.faults import Fault, FaultQueue

#: The ``requests`` key for bodies without a usable ``model``.
NO_MODEL = "<none>"


#: Calls the simulator remembers (``calls_matching``), and the request bytes kept of each.
MAX_CALLS_LOGGED = 50_000
CALL_EXCERPT_BYTES = 600


@dataclass
class CallRecord:
    """One request to the MiMo endpoint, as tests look for it: when it arrived, its body's
    first bytes, and when the client went away before the answer (None: it did not)."""

    started_at: float
    body: str
    client_gone_at: float | None = None


class SimState:
    """Faults and statistics of one simulator app, shared by the server and in-process tests.

    The server runs on its own thread and loop while tests call ``add_faults``/``stats``
    from theirs: every method takes a lock (they are all tiny).
    """

    def __init__(self, seed: int = 0, run_faults: Iterable[Fault] = ()) -> None:
        #: Draws latency samples and random failures; used only on the server's loop.
        self.rng = random.Random(seed)
        #: Whole-run faults (``SimConfig.faults``): never used up, not cleared by ``reset``.
        self.run_faults = tuple(run_faults)
        self._lock = threading.Lock()
        self._faults = FaultQueue()
        self._zero()

    def _zero(self) -> None:
        self._requests: Counter[str] = Counter()
        self._responses: Counter[str] = Counter()
        self._quota_rejected: Counter[str] = Counter()
        self._faults_applied: Counter[str] = Counter()
        # what answered calls carried, per model: what mimoq's usage totals are checked against
        self._audio_out_s: dict[str, float] = {}
        self._audio_in_s: dict[str, float] = {}
        self._chars: Counter[str] = Counter()
        self._disconnects = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._calls: list[CallRecord] = []

    # --- faults -------------------------------------------------------------------------

    def add_faults(self, faults: Iterable[Fault]) -> None:
        """Queue faults for the next matching requests, in order."""
        with self._lock:
            self._faults.add(faults)

    def add_fault(self, fault: Fault) -> None:
        self.add_faults([fault])

    def take_fault(self, body: bytes, *, speech: bool) -> Fault | None:
        """The first queued fault matching this request (used up), else the first matching
        whole-run fault; counted as applied."""
        with self._lock:
            fault = self._faults.take(body, speech=speech)
            if fault is None:
                matching = (f for f in self.run_faults if f.applies_to(body, speech=speech))
                fault = next(matching, None)
            if fault is not None:
                self._faults_applied[fault.kind.value] += 1
            return fault

    def pending_faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return self._faults.describe()

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset(self) -> None:
        """Forget pending faults and all counters (the in-flight gauge keeps counting)."""
        with self._lock:
            self._faults.clear()
            in_flight = self._in_flight
            self._zero()
            self._in_flight = self._max_in_flight = in_flight

    # --- counters -----------------------------------------------------------------------

    def enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def log_call(self, body: bytes | None) -> CallRecord:
        """Note one request to the MiMo endpoint (the newest ``MAX_CALLS_LOGGED``)."""
        text = (body or b"")[:CALL_EXCERPT_BYTES].decode("utf-8", "replace")
        record = CallRecord(started_at=time.time(), body=text)
        with self._lock:
            self._calls.append(record)
            del self._calls[:-MAX_CALLS_LOGGED]
        return record

    def calls_matching(self, needle: str) -> list[CallRecord]:
        """The logged calls whose request body (its first bytes) contains ``needle``."""
        with self._lock:
            return [c for c in self._calls if needle in c.body]

    def count_request(self, model: str | None) -> None:
        with self._lock:
            self._requests[model or NO_MODEL] += 1

    def count_audio(
        self, model: str, *, produced_s: float = 0.0, heard_s: float = 0.0, chars: int = 0
    ) -> None:
        """Count what one answered call carried (speech produced, audio heard, text spoken)."""
        with self._lock:
            self._audio_out_s[model] = self._audio_out_s.get(model, 0.0) + produced_s
            self._audio_in_s[model] = self._audio_in_s.get(model, 0.0) + heard_s
            self._chars[model] += chars

    def count_response(self, status: int) -> None:
        with self._lock:
            self._responses[str(status)] += 1

    def count_quota_rejection(self, model: str) -> None:
        with self._lock:
            self._quota_rejected[model] += 1

    def count_disconnect(self) -> None:
        with self._lock:
            self._disconnects += 1

    def stats(self) -> dict[str, Any]:
        """A JSON-ready snapshot (what ``GET /_sim/stats`` returns)."""
        with self._lock:
            return {
                "requests": dict(self._requests),
                "total_requests": sum(self._requests.values()),
                "responses": dict(self._responses),
                "quota_rejected": dict(self._quota_rejected),
                "faults_applied": dict(self._faults_applied),
                "audio_out_s": {m: round(v, 3) for m, v in self._audio_out_s.items()},
                "audio_in_s": {m: round(v, 3) for m, v in self._audio_in_s.items()},
                "chars": dict(self._chars),
                "faults_pending": len(self._faults.describe()),
                "disconnects": self._disconnects,
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
            }
