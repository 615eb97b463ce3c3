"""The fleet-wide MiMo quota limiter and scheduler (see ``core`` and docs/scheduling.md).

The public names live here; ``config`` is the settings view, ``capacity`` the start-up
capacity check, ``admission`` the workers' periodic admission of waiting bulk jobs.
"""

from mimoq.core.dialect import usage_tokens
from mimoq.worker.limiter.config import (
    KEY_PARTS,
    LimiterConfig,
    ModelQuota,
    account_fingerprint,
    admission_keys,
    limiter_keys,
)
from mimoq.worker.limiter.core import (
    KEY_TTL_S,
    UNKNOWN_AUDIO_S,
    Decision,
    Lease,
    Limiter,
    LimiterSnapshot,
    RedisLimiter,
    UnlimitedLimiter,
    build_limiter,
)

__all__ = [
    "KEY_PARTS",
    "KEY_TTL_S",
    "UNKNOWN_AUDIO_S",
    "Decision",
    "Lease",
    "Limiter",
    "LimiterConfig",
    "LimiterSnapshot",
    "ModelQuota",
    "RedisLimiter",
    "UnlimitedLimiter",
    "account_fingerprint",
    "admission_keys",
    "build_limiter",
    "limiter_keys",
    "usage_tokens",
]
