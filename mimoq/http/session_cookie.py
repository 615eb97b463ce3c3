"""The dashboard's login session: a signed HttpOnly cookie, and a CSRF token derived from it.

The cookie carries the tenant and an expiry, signed with HMAC-SHA256 under a key derived
from the configured tokens, so every ``mimoq serve`` with the same tokens accepts it, no
session store is needed, and changing the tokens logs everyone out. It never holds a token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Final

COOKIE: Final = "mimoq_session"
LIFETIME_S: Final = 12 * 3600


def signing_key(token_entries: list[str]) -> bytes:
    material = "\n".join(sorted(token_entries)).encode()
    return hashlib.sha256(b"mimoq-dashboard-session\n" + material).digest()


def _sign(key: bytes, payload: str) -> str:
    return base64.urlsafe_b64encode(hmac.new(key, payload.encode(), "sha256").digest()).decode()


def issue(key: bytes, tenant: str, *, now: float | None = None) -> str:
    expires = int((now if now is not None else time.time()) + LIFETIME_S)
    payload = f"{tenant}|{expires}"
    return f"{payload}|{_sign(key, payload)}"


def verify(key: bytes, cookie: str | None, *, now: float | None = None) -> str | None:
    """The tenant of a valid, unexpired cookie; None otherwise."""
    if not cookie or cookie.count("|") != 2:
        return None
    tenant, expires, signature = cookie.split("|")
    if not hmac.compare_digest(_sign(key, f"{tenant}|{expires}"), signature):
        return None
    if not expires.isdigit() or int(expires) < (now if now is not None else time.time()):
        return None
    return tenant


def csrf_token(key: bytes, cookie: str) -> str:
    """Bound to the session: a form from another site cannot know it."""
    return _sign(key, "csrf|" + cookie)
