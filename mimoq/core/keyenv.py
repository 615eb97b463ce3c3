"""Numbered key presets from the environment: ``MIMO_<N>_API_KEY`` and its companions.

pydantic-settings reads fixed variable names only; these are discovered by pattern, once,
when ``Settings`` is built (one preset per ``N``, in numeric order).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, SecretStr

from mimoq.core.errors import ConfigurationError

Region = Literal["cn", "sgp", "ams"]
REGIONS: tuple[str, ...] = ("cn", "sgp", "ams")
#: Account names end up in Redis keys and metric labels: keep them short and plain.
ACCOUNT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_NUMBERED = re.compile(r"^MIMO_(\d{1,4})_API_KEY$")


class NumberedKey(BaseModel):
    """One ``MIMO_<N>_*`` preset: a key, and optionally its region, base URL and account."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_key: SecretStr
    region: Region | None = None
    base_url: str | None = None
    account: str | None = None


def numbered_keys(environ: Mapping[str, str]) -> dict[str, NumberedKey]:
    """Every non-blank ``MIMO_<N>_API_KEY`` with its ``_REGION``/``_BASE_URL``/``_ACCOUNT``.

    Keys of the result are ``N`` as text, sorted numerically.
    """
    found: dict[int, NumberedKey] = {}
    for name, value in environ.items():
        match = _NUMBERED.match(name)
        if match is None or not value.strip():
            continue
        n = int(match.group(1))

        def extra(suffix: str, n: int = n) -> str | None:
            raw = environ.get(f"MIMO_{n}_{suffix}", "").strip()
            return raw or None

        region = extra("REGION")
        if region is not None and region not in REGIONS:
            raise ConfigurationError(f"MIMO_{n}_REGION must be one of {', '.join(REGIONS)}")
        account = extra("ACCOUNT")
        if account is not None and not ACCOUNT_NAME.match(account):
            raise ConfigurationError(
                f"MIMO_{n}_ACCOUNT must be 1-64 characters of A-Z a-z 0-9 . _ - "
                "(it names Redis keys and metric labels)"
            )
        base_url = extra("BASE_URL")
        found[n] = NumberedKey(
            api_key=SecretStr(value.strip()),
            region=region,  # checked against REGIONS above
            base_url=base_url.rstrip("/") if base_url else None,
            account=account,
        )
    return {str(n): found[n] for n in sorted(found)}
