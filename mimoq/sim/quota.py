"""The simulator's upstream quota: per-model RPM, ASR TPM and a concurrency cap, like MiMo's.

Implements ``mimoq.sim.quota_protocol.QuotaPolicy``. Two ways to count, selectable
because nobody outside Xiaomi knows which one MiMo uses and they punish different mistakes:

- ``sliding_window``: at most N requests (T tokens) whose admission time lies in the last
  ``window_s`` seconds, the window half-open ``(now - window_s, now]``. The strict one: a
  client that bunches requests is caught at any instant.
- ``token_bucket``: buckets of N requests (T tokens) refilled continuously at N (T) per
  window. Lenient to bunching, but an empty bucket refills slowly.

Tokens are charged when a request is admitted from the estimate the app passes
(``TokenAccounting.ADMISSION``, the default: what an upstream can know before it runs the
model), or only when ``record_usage`` reports them (``COMPLETION``: admission then only
checks that the estimate would fit). The clock is injectable so tests never sleep.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from mimoq.core import dialect_constants as dc


class QuotaAlgorithm(StrEnum):
    SLIDING_WINDOW = "sliding_window"
    TOKEN_BUCKET = "token_bucket"  # noqa: S105 (an algorithm's name, not a secret)


class TokenAccounting(StrEnum):
    ADMISSION = "admission"  # the estimate is charged when the request is admitted
    COMPLETION = "completion"  # the reported usage is charged when the response is done


class RejectReason(StrEnum):
    REQUESTS = "requests"
    TOKENS = "tokens"
    CONCURRENCY = "concurrency"


@dataclass(frozen=True)
class QuotaConfig:
    """An upstream's quota. ``rpm``/``tpm`` are per ``window_s``; a model absent from ``tpm``
    has no token limit and one absent from ``rpm`` gets ``default_rpm``."""

    window_s: float = 60.0
    default_rpm: int = 100
    rpm: Mapping[str, int] = field(default_factory=dict)
    tpm: Mapping[str, int] = field(default_factory=lambda: {dc.ASR_MODEL: 10_000})
    algorithm: QuotaAlgorithm = QuotaAlgorithm.SLIDING_WINDOW
    #: Requests in flight across all models (MiMo's unpublished per-account cap); None: no cap.
    max_concurrency: int | None = None
    #: Whether the 429 carries ``Retry-After`` (MiMo is not known to send it).
    send_retry_after: bool = False
    token_accounting: TokenAccounting = TokenAccounting.ADMISSION

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.default_rpm <= 0 or any(n <= 0 for n in self.rpm.values()):
            raise ValueError("quota window and request limits must be positive")
        if any(n <= 0 for n in self.tpm.values()):
            raise ValueError("token limits must be positive (leave a model out for no limit)")
        if self.max_concurrency is not None and self.max_concurrency <= 0:
            raise ValueError("max_concurrency must be positive or None")


class _Meter(Protocol):
    """One model's request and token counts under one algorithm."""

    def wait(self, now: float, tokens: int) -> tuple[float, RejectReason | None]: ...
    def charge(self, now: float, requests: int, tokens: int) -> None: ...


class _SlidingWindow:
    """Admission times (and tokens) of the last window; entries at ``now - window`` have left."""

    def __init__(self, window_s: float, requests: int, tokens: int | None) -> None:
        self.window_s, self.requests, self.tokens = window_s, requests, tokens
        self._times: deque[float] = deque()
        self._charges: deque[tuple[float, int]] = deque()
        self._used = 0

    def _expire(self, now: float) -> None:
        edge = now - self.window_s
        while self._times and self._times[0] <= edge:
            self._times.popleft()
        while self._charges and self._charges[0][0] <= edge:
            self._used -= self._charges.popleft()[1]

    def wait(self, now: float, tokens: int) -> tuple[float, RejectReason | None]:
        self._expire(now)
        if len(self._times) >= self.requests:
            # the oldest grants must leave until one more fits
            oldest = self._times[len(self._times) - self.requests]
            return oldest + self.window_s - now, RejectReason.REQUESTS
        if self.tokens is not None and self._used and self._used + tokens > self.tokens:
            used = self._used
            for at, charged in self._charges:
                used -= charged
                if used + tokens <= self.tokens or used <= 0:
                    return at + self.window_s - now, RejectReason.TOKENS
        return 0.0, None

    def charge(self, now: float, requests: int, tokens: int) -> None:
        self._expire(now)
        self._times.extend([now] * requests)
        if self.tokens is not None and tokens:
            self._charges.append((now, tokens))
            self._used += tokens


class _TokenBucket:
    """Buckets that start full and refill at the quota's rate; a charge may overdraw tokens."""

    def __init__(self, window_s: float, requests: int, tokens: int | None, now: float) -> None:
        self.window_s, self.requests, self.tokens = window_s, requests, tokens
        self._req_level = float(requests)
        self._tok_level = float(tokens or 0)
        self._at = now

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._at)
        self._at = max(self._at, now)
        share = elapsed / self.window_s
        self._req_level = min(self.requests, self._req_level + share * self.requests)
        if self.tokens is not None:
            self._tok_level = min(self.tokens, self._tok_level + share * self.tokens)

    def wait(self, now: float, tokens: int) -> tuple[float, RejectReason | None]:
        self._refill(now)
        if self._req_level < 1:
            return (1 - self._req_level) * self.window_s / self.requests, RejectReason.REQUESTS
        if self.tokens is not None:
            need = min(tokens, self.tokens)  # a request larger than the bucket waits for a full one
            if self._tok_level < need:
                return (need - self._tok_level) * self.window_s / self.tokens, RejectReason.TOKENS
        return 0.0, None

    def charge(self, now: float, requests: int, tokens: int) -> None:
        self._refill(now)
        self._req_level -= requests
        if self.tokens is not None:
            self._tok_level -= tokens


class _Admission:
    """A granted request; releasing it twice is harmless."""

    def __init__(self, quota: SimQuota) -> None:
        self._quota = quota
        self._released = False

    def release(self) -> None:
        with self._quota._lock:
            if not self._released:
                self._released = True
                self._quota._in_flight -= 1


class SimQuota:
    """A thread-safe ``QuotaPolicy`` with an injectable clock (seconds, monotonic)."""

    def __init__(
        self, config: QuotaConfig | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config or QuotaConfig()
        self._clock = clock
        self._lock = threading.Lock()
        self.reset()

    @property
    def send_retry_after(self) -> bool:
        """Whether the app should send ``Retry-After`` with this policy's 429s."""
        return self.config.send_retry_after

    def reset(self) -> None:
        """Forget all counts (a new window for everyone) and statistics."""
        with self._lock:
            self._meters: dict[str, _Meter] = {}
            self._in_flight = 0
            self._max_in_flight = 0
            self._admitted: Counter[str] = Counter()
            self._rejected: Counter[tuple[str, RejectReason]] = Counter()
            self._usage: Counter[str] = Counter()

    def _meter(self, model: str) -> _Meter:
        meter = self._meters.get(model)
        if meter is None:
            c = self.config
            requests, tokens = c.rpm.get(model, c.default_rpm), c.tpm.get(model)
            if c.algorithm is QuotaAlgorithm.SLIDING_WINDOW:
                meter = _SlidingWindow(c.window_s, requests, tokens)
            else:
                meter = _TokenBucket(c.window_s, requests, tokens, self._clock())
            self._meters[model] = meter
        return meter

    def admit(self, model: str, estimated_tokens: int) -> _Admission | float:
        """An admission, or the seconds after which a retry may succeed (a 429)."""
        with self._lock:
            now = self._clock()
            cap = self.config.max_concurrency
            if cap is not None and self._in_flight >= cap:
                # nobody knows when a call in flight ends: suggest a second, like a server would
                self._rejected[model, RejectReason.CONCURRENCY] += 1
                return 1.0
            meter = self._meter(model)
            wait, reason = meter.wait(now, max(estimated_tokens, 0))
            if reason is not None:
                self._rejected[model, reason] += 1
                return float(max(wait, 0.001))
            at_admission = self.config.token_accounting is TokenAccounting.ADMISSION
            meter.charge(now, 1, max(estimated_tokens, 0) if at_admission else 0)
            self._admitted[model] += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            return _Admission(self)

    def record_usage(self, model: str, tokens: int) -> None:
        """The usage of a finished call: charged now under ``COMPLETION`` accounting."""
        with self._lock:
            self._usage[model] += tokens
            if self.config.token_accounting is TokenAccounting.COMPLETION and tokens > 0:
                self._meter(model).charge(self._clock(), 0, tokens)

    def stats(self) -> dict[str, Any]:
        """For ``/_sim/stats``: admitted and rejected (by reason) per model, usage, in flight."""
        with self._lock:
            rejected: dict[str, dict[str, int]] = {}
            for (model, reason), n in sorted(self._rejected.items()):
                rejected.setdefault(model, {})[str(reason)] = n
            return {
                "algorithm": str(self.config.algorithm),
                "admitted": dict(self._admitted),
                "rejected": rejected,
                "rejected_total": sum(self._rejected.values()),
                "usage_tokens": dict(self._usage),
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
            }
