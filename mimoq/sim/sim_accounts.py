"""The simulator's accounts: which keys it knows, the host family it plays, account states.

Real MiMo has accounts (quota and balance) behind keys, and two host families: the
pay-as-you-go host takes ``sk-`` keys and answers a ``tp-`` key with 401, a Token Plan
cluster the other way round. The simulator plays one family (``SimConfig.family``, None:
either), knows its keys (``api_key`` and ``api_keys``; none: any key, as before), makes each
key an account (named like mimoq names it: 16 hex of the key's SHA-256), and lets tests
switch an account into a state MiMo answers for it: out of funds (402), the Token Plan burst
402 (unwrapped ``server_error`` body), a revoked key (401) or a forbidden one (403).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import Any, Final

from mimoq.sim.quota_protocol import QuotaPolicy

#: The account of requests when the simulator accepts any key (or none).
OPEN_ACCOUNT: Final = "open"
#: ``set_state`` target meaning "every account".
EVERY_ACCOUNT: Final = "*"


class AccountState(StrEnum):
    """How the simulated MiMo treats an account's requests."""

    OK = "ok"
    INSUFFICIENT_FUNDS = "insufficient_funds"  # 402, MiMo's wrapped error body
    BURST_402 = "burst_402"  # Token Plan's burst throttle: 402, unwrapped server_error body
    REVOKED = "revoked"  # 401
    FORBIDDEN = "forbidden"  # 403


#: State -> (status, unwrapped body?, message). ``None`` message: the status's default.
STATE_ERRORS: Final[Mapping[AccountState, tuple[int, bool, str | None]]] = {
    AccountState.INSUFFICIENT_FUNDS: (402, False, "Insufficient account balance"),
    AccountState.BURST_402: (402, True, "Upstream request failed: Insufficient account funds"),
    AccountState.REVOKED: (401, False, None),
    AccountState.FORBIDDEN: (403, False, None),
}


def account_name(key: str) -> str:
    """The account a key stands for: 16 hex of its SHA-256 (mimoq's fingerprint)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def key_family(key: str) -> str:
    return "token_plan" if key.startswith("tp-") else "payg"


class Denied(Exception):
    """The request is refused for its account: answer ``status`` (body shape and message)."""

    def __init__(self, status: int, *, unwrapped: bool = False, message: str | None = None):
        super().__init__(status)
        self.status = status
        self.unwrapped = unwrapped
        self.message = message


class SimAccounts:
    """Known keys, the family rule, switchable states and per-account quotas; thread-safe."""

    def __init__(
        self,
        keys: Sequence[str],
        *,
        family: str | None,
        quota_factory: Callable[[], QuotaPolicy | None] | None = None,
    ) -> None:
        self._keys = {k: account_name(k) for k in keys}
        self.family = family
        self._quota_factory = quota_factory
        self._lock = threading.Lock()
        self._states: dict[str, AccountState] = {}
        self._quotas: dict[str, QuotaPolicy | None] = {}
        self._requests: Counter[str] = Counter()

    def account_for(self, offered: Sequence[str], *, billing: bool) -> str:
        """The account of a request offering these keys, or raise ``Denied``.

        Order like MiMo: unknown key 401, key of the other host family 401, then the
        account's state (``billing``: a call that spends balance; listing models does not,
        so a 402 state lets it through).
        """
        account = OPEN_ACCOUNT
        if self._keys:
            matched = [
                (k, a)
                for k, a in self._keys.items()
                for o in offered
                if hmac.compare_digest(o.encode(), k.encode())
            ]
            if not matched:
                raise Denied(401)
            key, account = matched[0]
        else:
            key = offered[0] if offered else ""
            if key:
                account = account_name(key)
        if self.family is not None and key and key_family(key) != self.family:
            raise Denied(401, message="Invalid API key for this endpoint")
        with self._lock:
            self._requests[account] += 1
            state = self._states.get(account) or self._states.get(EVERY_ACCOUNT)
        if state is not None and state is not AccountState.OK:
            status, unwrapped, message = STATE_ERRORS[state]
            if billing or status != 402:
                raise Denied(status, unwrapped=unwrapped, message=message)
        return account

    def set_state(self, account: str, state: AccountState) -> None:
        """Switch ``account`` (a name, or ``*`` for every account) into ``state``."""
        with self._lock:
            if account == EVERY_ACCOUNT and state is AccountState.OK:
                self._states.clear()
            else:
                self._states[account] = state

    def quota(self, account: str, shared: QuotaPolicy | None) -> QuotaPolicy | None:
        """The quota of ``account``: its own when per-account quotas are on, else ``shared``."""
        if self._quota_factory is None:
            return shared
        with self._lock:
            if account not in self._quotas:
                self._quotas[account] = self._quota_factory()
            return self._quotas[account]

    def describe(self) -> dict[str, Any]:
        """States and request counts per account (what ``GET /_sim/accounts`` returns)."""
        with self._lock:
            return {
                "family": self.family,
                "accounts": sorted(set(self._keys.values())),
                "states": {a: s.value for a, s in self._states.items()},
                "requests": dict(self._requests),
            }

    def reset(self) -> None:
        """Every account back to OK; counters and per-account quotas forgotten."""
        with self._lock:
            self._states.clear()
            self._quotas.clear()
            self._requests.clear()
