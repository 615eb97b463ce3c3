"""PURE: the limiter's view of the settings — quotas per model, the account, the Redis keys."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from mimoq.core import dialect_constants as dc
from mimoq.core import wire
from mimoq.core.errors import ConfigurationError
from mimoq.core.settings import Settings

#: MiMo's published per-account quotas (docs/mimo-dialect.md), per minute.
OFFICIAL_RPM: Final = 100
OFFICIAL_TPM: Final[Mapping[str, int]] = {dc.ASR_MODEL: 10_000}
#: The account name used when there is neither a key nor a configured name (the simulator).
ANONYMOUS_ACCOUNT: Final = "anonymous"
#: Order of the KEYS every limiter script receives (``state``: the model's schedule, pace and
#: counters, ``c:turns`` and the like; ``lanes``: grants per lane and tenant, and the counters
#: older versions kept there, which the snapshot adds to the state's;
#: ``ilog``: the interactive grants of the guard window; ``bulk_tickets`` and
#: ``interactive_tickets``: the reserved slots of each lane, together the schedule;
#: ``ticket_tenant`` and ``tenant_tickets``: whose each ticket is, and how many each lane's
#: tenant holds, for the tenants' turns). The admission keys of ``admission_keys`` follow.
KEY_PARTS: Final = (
    "state", "log", "tokens", "leases", "ticket_audio", "lanes", "ilog",
    "bulk_tickets", "interactive_tickets", "ticket_tenant", "tenant_tickets",
)  # fmt: skip


@dataclass(frozen=True)
class ModelQuota:
    """One model's quota per window: requests, and tokens when the model has a token limit."""

    requests: int
    tokens: int | None = None


def account_fingerprint(api_key: str | None) -> str:
    """A stable, non-reversible account id: the first 16 hex of the key's SHA-256."""
    if not api_key:
        return ANONYMOUS_ACCOUNT
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


def limiter_keys(account: str, model: str) -> list[str]:
    """The Redis keys of one account+model limiter, in ``KEY_PARTS`` order.

    The ``{account:model}`` hash tag groups one limiter's keys. mimoq runs on one Redis
    (optionally behind Sentinel), not on Redis Cluster: the acquire script also moves jobs
    into arq's single queue key, so its keys could not share a cluster slot anyway.
    """
    base = f"{wire.LIMITER_PREFIX}{{{account}:{model}}}"
    return [f"{base}:{part}" for part in KEY_PARTS]


def admission_keys(model: str) -> list[str]:
    """The keys the scheduler admits ``model``'s waiting bulk jobs with (after ``limiter_keys``).

    They are the model's, not the account's: enqueue.lua writes them and knows no account.
    """
    return [
        wire.admitted_key(model),
        wire.wait_ring_key(model),
        wire.WAIT_MODELS_KEY,
        wire.QUEUE_NAME,
        wire.wait_ring_key(model, "interactive"),
    ]


#: A fleet without 429s pauses a model this share of a window after a 429 that carried no
#: Retry-After (2 s of MiMo's minute): long enough for the burst that drew it to pass, short
#: against the window the quota is counted over. Compressed windows compress it alike.
COOLDOWN_SHARE_OF_WINDOW: Final = 1 / 30
#: A lease of a worker that died expires this long after the longest a call may take (the
#: job timeout): a live call never outlives its lease, a dead one frees its slot soon after.
LEASE_SLACK_S: Final = 30.0
#: How long a worker's releases of one model wait to be sent together: at the mix's pace
#: (hundreds of calls a second) a batch of several, where each was a call of its own; at
#: MiMo's real pace a release goes alone, this late. Short against any call's latency.
RELEASE_LINGER_S: Final = 0.05


@dataclass(frozen=True)
class LimiterConfig:
    """Everything the fleet limiter needs: the operator's settings (the quota, its window and
    target, the cap in flight, the bulk share, the burst) and the tuning constants below,
    each with why it has its value. Tests build it directly with other constants."""

    account: str
    window_s: float = 60.0
    target: float = 0.98
    #: Seconds the hard guard adds to the window (never more than the quota in any window
    #: this long): the send-to-receive spread expected before the lag is measured. Capped
    #: at half the pacing slack (``guard_margin_s``), so the guard never paces below target.
    margin_s: float = 0.5
    burst: int = 1
    max_in_flight: int | None = None
    #: A dead worker's in-flight lease expires after this (``from_settings``: the job
    #: timeout plus LEASE_SLACK_S, at least 300 s).
    lease_ttl_s: float = 300.0
    #: A deferred job's reserved slot stays claimable this long after its time: a job back
    #: late (a worker restart, a Redis failover) still finds it.
    ticket_grace_s: float = 300.0
    #: Fleet-wide pause of a model after a 429 without Retry-After (``from_settings``:
    #: COOLDOWN_SHARE_OF_WINDOW of the window).
    cooldown_s: float = 2.0
    #: AIMD: after a 429 within 3 windows of another the paced rate is multiplied by this,
    #: and regains ``recovery_per_window`` of the target per clean window.
    decrease: float = 0.7
    recovery_per_window: float = 0.1
    #: The starting ASR token estimate: a call's fixed cost (the prompt's text) and tokens
    #: per second of audio (the documented 4 s clip: 25 audio + 20 completion tokens);
    #: calibrated fleet-wide from the usage of finished calls.
    tokens_per_call: float = 21.0
    tokens_per_audio_s: float = 11.25
    default_rpm: int = OFFICIAL_RPM
    rpm: Mapping[str, int] = field(default_factory=dict)
    tpm: Mapping[str, int] = field(default_factory=lambda: dict(OFFICIAL_TPM))
    bulk_min_share: float = 0.5
    #: Seconds of a model's slots that waiting bulk jobs are admitted into arq's queue ahead
    #: of time (at least 2 jobs): enough that a worker always finds the next one, few enough
    #: that an interactive job or another tenant is never queued behind many.
    lookahead_s: float = 0.5
    #: After a 429 that follows 3 clean windows the rate is multiplied by this (a one-off
    #: 429 at the quota's edge, not congestion), and the step is regained within a window.
    first_decrease: float = 0.9
    #: A job holding a slot is deferred to this long before it and waits the rest in the
    #: worker on a timer: arq's poll delay on a busy host would make it miss the slot.
    hold_s: float = 0.25
    #: Admitted bulk jobs get their slots as they are admitted, and wait in arq's queue
    #: until ``hold_s`` before them (limiter_common.lua, slot_plan). Off for a pool of
    #: several accounts, whose jobs are routed to an account only when they ask for a slot.
    admit_slots: bool = True
    #: MIMOQ_TENANT_LIMITS is set: admission rounds skip tenants held at their limit
    tenant_holds: bool = False
    #: A worker sends the releases of one model that end within this long of the first in
    #: one call (worker/limiter/releases.py). 0 sends each at once; tests that build the
    #: config read the state right after a release. ``from_settings``: RELEASE_LINGER_S.
    release_linger_s: float = 0.0

    def __post_init__(self) -> None:
        bad = [m for m, n in self.rpm.items() if n <= 0] + [m for m, n in self.tpm.items() if n < 0]
        if bad:
            raise ConfigurationError(
                "limiter quotas must be positive (0 removes a token limit): check "
                f"{', '.join(bad)} in MIMOQ_LIMIT_RPM / MIMOQ_LIMIT_TPM"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> LimiterConfig:
        """Official quotas, overridden per model by MIMOQ_LIMIT_RPM / MIMOQ_LIMIT_TPM; the
        tuning constants are the defaults above, those that scale with time derived here."""
        limiter = settings.limiter
        return cls(
            account=limiter.account or account_fingerprint(settings.api_key()),
            window_s=limiter.window_s,
            target=limiter.target,
            burst=limiter.burst,
            max_in_flight=limiter.max_in_flight,
            default_rpm=limiter.default_rpm,
            rpm=dict(limiter.rpm),
            tpm={**OFFICIAL_TPM, **limiter.tpm},
            bulk_min_share=limiter.bulk_min_share,
            cooldown_s=limiter.window_s * COOLDOWN_SHARE_OF_WINDOW,
            lease_ttl_s=max(cls.lease_ttl_s, settings.worker.job_timeout_s + LEASE_SLACK_S),
            tenant_holds=settings.usage.limits().enabled,
            release_linger_s=RELEASE_LINGER_S,
        )

    @property
    def margin_cap_s(self) -> float:
        """The widest guard margin that keeps the guard's rate above the paced one by half the
        slack (see ``guard_margin_s``): the measured lag never widens it past this."""
        return self.window_s * (1 / self.target - 1) / 2

    @property
    def guard_margin_s(self) -> float:
        """The margin the hard guard uses: ``margin_s``, capped so that the guard's own rate
        (the quota per ``window + margin``) stays above the paced rate by half the slack.

        A guard slower than the pacing would take over and throttle below the target (a
        margin of 0.3 s on a 10 s window at 98 % measured 96.4 %).
        """
        return min(self.margin_s, self.margin_cap_s)

    def quota(self, model: str) -> ModelQuota:
        """The quota of ``model``; models nobody configured get the default request quota."""
        requests = self.rpm.get(model, self.default_rpm)
        return ModelQuota(requests=requests, tokens=self.tpm.get(model) or None)

    def models(self) -> list[str]:
        """Every model the limiter knows a quota for: MiMo's audio models plus configured ones."""
        return list(dict.fromkeys([*dc.ALL_MODELS, *self.rpm, *self.tpm]))
