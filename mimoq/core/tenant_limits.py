"""``MIMOQ_TENANT_LIMITS``: what each tenant may use per window, and the window arithmetic.

The grammar (docs/usage.md)::

    limits  := entry (";" entry)*
    entry   := tenant ":" cap ("," cap)*
    tenant  := a tenant name | "*" (every tenant not named) | "_" (jobs that name no tenant)
    cap     := metric "=" amount "/" window
    metric  := requests | audio_s | audio_in_s | audio_out_s | chars | tokens
    window  := a whole number and a unit: s, m, h or d (1h, 1d, 30s, 15m)

Windows are fixed and aligned to the Unix epoch (so a ``/1d`` window is a UTC day and
frees at midnight UTC): every worker and ``mimoq serve`` computes the same window from
the clock alone, and a window's counters are one Redis hash (``wire.usage_key``).
Pure: no Redis, no clock of its own (``now`` is always passed in).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from mimoq.core.jobs import TENANT_PATTERN

#: What is counted per tenant and model (``failed``: jobs that ended failed; not limitable).
USAGE_METRICS: Final = (
    "requests", "failed", "audio_s", "audio_in_s", "audio_out_s", "chars", "tokens",
)  # fmt: skip
#: The metrics a limit may cap.
LIMIT_METRICS: Final = ("requests", "audio_s", "audio_in_s", "audio_out_s", "chars", "tokens")
#: The default entry's name, and the name of jobs that name no tenant.
ANY_TENANT: Final = "*"
NO_TENANT: Final = "_"
#: The windows usage is always kept in (for ``mimoq usage``), seconds.
HOUR_S: Final = 3600
DAY_S: Final = 86_400
REPORT_WINDOWS: Final = (HOUR_S, DAY_S)
_UNITS: Final = {"s": 1, "m": 60, "h": HOUR_S, "d": DAY_S}
#: The longest window a limit may have (a usage hash lives two windows).
MAX_WINDOW_S: Final = 31 * DAY_S
ACCEPTED_FORM: Final = (
    "TENANT:METRIC=AMOUNT/WINDOW[,METRIC=AMOUNT/WINDOW...][;TENANT:...], e.g. "
    "'alpha:requests=5000/1d,audio_s=36000/1d;*:requests=20000/1d' (METRIC one of "
    + ", ".join(LIMIT_METRICS)
    + "; WINDOW a whole number with s, m, h or d)"
)
_CAP: Final = re.compile(
    r"^(?P<metric>[a-z_]+)=(?P<amount>[0-9]+(?:\.[0-9]+)?)/(?P<n>[0-9]+)(?P<unit>[smhd])$"
)
_TENANT: Final = re.compile(TENANT_PATTERN)


class TenantLimitsError(ValueError):
    """A malformed ``MIMOQ_TENANT_LIMITS``: the message names the tenant, the field and the form."""


@dataclass(frozen=True)
class Limit:
    """At most ``amount`` of ``metric`` per fixed window of ``window_s`` seconds."""

    metric: str
    amount: float
    window_s: int

    def text(self) -> str:
        return f"{self.metric}={self.amount:g}/{window_text(self.window_s)}"


@dataclass(frozen=True)
class TenantLimits:
    """The parsed setting: limits by tenant name, and the ``*`` default for the rest."""

    by_tenant: Mapping[str, tuple[Limit, ...]] = field(default_factory=dict)
    default: tuple[Limit, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.by_tenant) or bool(self.default)

    def for_tenant(self, tenant: str | None) -> tuple[Limit, ...]:
        """The limits of ``tenant`` (None: the jobs that name no tenant, ``_``)."""
        name = tenant or NO_TENANT
        if name in self.by_tenant:
            return self.by_tenant[name]
        return self.default

    def windows(self) -> tuple[int, ...]:
        """Every window usage is counted in: the report windows and each limit's."""
        found = set(REPORT_WINDOWS)
        for limits in (*self.by_tenant.values(), self.default):
            found.update(limit.window_s for limit in limits)
        return tuple(sorted(found))

    def text(self) -> str:
        """The setting written back in its own grammar (what ``parse`` reads as equal)."""
        parts = [f"{t}:{','.join(x.text() for x in ls)}" for t, ls in self.by_tenant.items()]
        if self.default:
            parts.append(f"{ANY_TENANT}:{','.join(x.text() for x in self.default)}")
        return ";".join(parts)


def window_text(window_s: int) -> str:
    """``86400`` -> ``1d``: the largest unit that divides the window."""
    for unit in ("d", "h", "m"):
        if window_s % _UNITS[unit] == 0:
            return f"{window_s // _UNITS[unit]}{unit}"
    return f"{window_s}s"


#: The longest span usage is kept for (day windows live 400 days): ``--since`` at most this.
MAX_SINCE_S: Final = 400 * DAY_S


def parse_duration(text: str) -> int:
    """``24h`` -> 86400: a whole number with s, m, h or d, up to 400 days (what ``--since``
    takes: a longer span has no usage kept, and would read one window per day of it)."""
    match = re.match(r"^([0-9]{1,7})([smhd])$", text.strip())
    if match is None or int(match[1]) == 0:
        raise ValueError(f"{text!r} is not a duration such as 90m, 24h or 7d")
    seconds = int(match[1]) * _UNITS[match[2]]
    if seconds > MAX_SINCE_S:
        raise ValueError(f"{text!r} is longer than usage is kept: at most 400d")
    return seconds


def window_start(now: float, window_s: int) -> int:
    """The start (Unix seconds) of the fixed window of ``window_s`` holding ``now``."""
    return math.floor(now / window_s) * window_s


def window_frees_at(now: float, window_s: int) -> int:
    """When the window holding ``now`` ends and a new one's counters start at zero."""
    return window_start(now, window_s) + window_s


def starts_between(since: float, now: float, window_s: int) -> list[int]:
    """The starts of every window of ``window_s`` that overlaps [since, now], oldest first."""
    first, last = window_start(since, window_s), window_start(now, window_s)
    return list(range(first, last + 1, window_s))


def _fail(tenant: str, field_name: str, problem: str) -> TenantLimitsError:
    return TenantLimitsError(
        f"MIMOQ_TENANT_LIMITS: tenant {tenant!r}, field {field_name!r}: {problem}; "
        f"accepted form: {ACCEPTED_FORM}"
    )


def _parse_cap(tenant: str, text: str) -> Limit:
    match = _CAP.match(text.strip())
    name = text.split("=", 1)[0].strip() or text.strip()
    if match is None:
        raise _fail(tenant, name, f"{text.strip()!r} is not METRIC=AMOUNT/WINDOW")
    metric = match["metric"]
    if metric not in LIMIT_METRICS:
        raise _fail(tenant, metric, f"unknown metric {metric!r}")
    window_s = int(match["n"]) * _UNITS[match["unit"]]
    if window_s <= 0 or window_s > MAX_WINDOW_S:
        raise _fail(tenant, metric, "the window must be from 1s to 31d")
    amount = float(match["amount"])
    if amount <= 0:
        raise _fail(tenant, metric, "the amount must be above 0")
    return Limit(metric=metric, amount=amount, window_s=window_s)


def _parse_entry(entry: str) -> tuple[str, tuple[Limit, ...]]:
    tenant, sep, caps = entry.partition(":")
    tenant = tenant.strip()
    if not sep:
        raise _fail(tenant or entry, "tenant", f"{entry.strip()!r} has no ':' after the tenant")
    if tenant not in (ANY_TENANT, NO_TENANT) and not _TENANT.match(tenant):
        raise _fail(tenant, "tenant", "a tenant is 1-64 of A-Z a-z 0-9 . _ - (or * or _)")
    if not caps.strip():
        raise _fail(tenant, "limits", "no METRIC=AMOUNT/WINDOW after the ':'")
    limits = tuple(_parse_cap(tenant, cap) for cap in caps.split(","))
    seen: set[tuple[str, int]] = set()
    for limit in limits:
        if (limit.metric, limit.window_s) in seen:
            raise _fail(tenant, limit.metric, "the same metric and window is capped twice")
        seen.add((limit.metric, limit.window_s))
    return tenant, limits


@functools.lru_cache(maxsize=8)
def parse_tenant_limits(text: str | None) -> TenantLimits:
    """Parse the setting; None or blank is no limits. Raises ``TenantLimitsError``."""
    if text is None or not text.strip():
        return TenantLimits()
    by_tenant: dict[str, tuple[Limit, ...]] = {}
    default: tuple[Limit, ...] = ()
    for entry in (e for e in text.split(";") if e.strip()):
        tenant, limits = _parse_entry(entry)
        if tenant in by_tenant or (tenant == ANY_TENANT and default):
            raise _fail(tenant, "tenant", "the tenant is named twice")
        if tenant == ANY_TENANT:
            default = limits
        else:
            by_tenant[tenant] = limits
    return TenantLimits(by_tenant=by_tenant, default=default)


@dataclass(frozen=True)
class Breach:
    """The first limit a tenant has reached: ``used`` of ``limit.amount`` in the window."""

    limit: Limit
    used: float
    frees_at: int

    def reason(self, tenant: str | None) -> str:
        """The one line ``mimoq status``/``inspect`` and GET /v1/jobs/{id} show."""
        return (
            f"tenant_limit: tenant {tenant or NO_TENANT} used {self.used:g} of "
            f"{self.limit.metric}={self.limit.amount:g}/{window_text(self.limit.window_s)}; "
            f"the window frees at {self.frees_at}"
        )


def first_breach(
    limits: Iterable[Limit], used: Mapping[tuple[str, int], float], now: float
) -> Breach | None:
    """The reached limit whose window frees last (the job must wait for all of them), if
    any; ``used`` maps (metric, window_s) to the tenant's total in the current window."""
    worst: Breach | None = None
    for limit in limits:
        amount = used.get((limit.metric, limit.window_s), 0.0)
        if amount >= limit.amount:
            frees = window_frees_at(now, limit.window_s)
            if worst is None or frees > worst.frees_at:
                worst = Breach(limit=limit, used=amount, frees_at=frees)
    return worst
