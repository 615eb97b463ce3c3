"""Bearer tokens (``MIMOQ_API_TOKENS``) and the tenant each one stands for.

Tokens are compared in constant time: every configured token is compared with the
presented one (as SHA-256 digests, so lengths do not leak either), whichever matches.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from dataclasses import dataclass
from typing import Final

from mimoq.core.errors import ConfigurationError
from mimoq.core.jobs import TENANT_PATTERN

#: The tenant of a token configured without a name.
DEFAULT_TENANT: Final = "default"
#: The tenant of every caller when no token is configured (loopback only).
LOCAL_TENANT: Final = "local"
MIN_TOKEN_CHARS: Final = 16
_TENANT = re.compile(TENANT_PATTERN)  # the job contract's own rule: the name becomes the tenant


@dataclass(frozen=True)
class _Entry:
    tenant: str
    digest: bytes


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenTable:
    """The configured tokens; ``tenant_of`` answers who presented a token, or None."""

    def __init__(self, entries: list[str]) -> None:
        self._entries: list[_Entry] = []
        for number, entry in enumerate(entries, 1):
            name, sep, token = entry.partition(":")
            tenant = name if sep else DEFAULT_TENANT
            token = token if sep else entry
            if not _TENANT.fullmatch(tenant):
                raise ConfigurationError(
                    f"MIMOQ_API_TOKENS entry #{number}: the name must be 1-64 characters of "
                    "A-Z a-z 0-9 . _ - (written name:token)"
                )
            if len(token) < MIN_TOKEN_CHARS:
                # The message names the entry by position, never by its value.
                raise ConfigurationError(
                    f"MIMOQ_API_TOKENS entry #{number}: a token needs at least "
                    f"{MIN_TOKEN_CHARS} characters (e.g. `openssl rand -hex 24`)"
                )
            self._entries.append(_Entry(tenant, _digest(token)))

    @property
    def enabled(self) -> bool:
        return bool(self._entries)

    def tenant_of(self, token: str) -> str | None:
        presented = _digest(token)
        found: str | None = None
        for entry in self._entries:  # no early exit: the time taken does not say which matched
            if hmac.compare_digest(entry.digest, presented) and found is None:
                found = entry.tenant
        return found


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if that is what it is."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the server reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, tokens: TokenTable) -> None:
    """Without a token, refuse to listen anywhere but loopback: the queue would be open."""
    if not tokens.enabled and not is_loopback(host):
        raise ConfigurationError(
            f"mimoq serve will not listen on {host} without MIMOQ_API_TOKENS: anyone who can "
            "reach it could spend the MiMo quota. Set MIMOQ_API_TOKENS (name:token,...) or "
            "bind to 127.0.0.1"
        )
