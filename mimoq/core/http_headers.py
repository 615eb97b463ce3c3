"""PURE: the rules a callback header must meet to be sent as-is (RFC 9110 §5.1, §5.5), and
the reading of a ``Retry-After`` header, from MiMo or from a callback receiver alike.

Checked twice: when a job is accepted (``mimoq.core.jobs.Callback``, a clear
``invalid_request_error``) and again just before a delivery is sent, because a foreign
producer writing raw Redis never went through the first check. A value is sent as latin-1
bytes, the widest encoding HTTP/1.1 carries, so ``"Zoë"`` goes out as one byte per
character instead of raising inside the HTTP client.
"""

from __future__ import annotations

import re
from email.utils import parsedate_to_datetime
from typing import Final

#: RFC 9110 ``token``: the only characters a field name may hold.
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Visible ASCII, space and tab, and obs-text (0x80-0xFF, i.e. latin-1 letters such as ë).
#: No CR, LF, NUL or other control characters: they would split or smuggle a header.
_VALUE: Final = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
MAX_NAME_CHARS: Final = 256
MAX_VALUE_CHARS: Final = 8192


def header_problem(name: str, value: str) -> str | None:
    """Why ``name: value`` cannot be sent as a header (a sentence naming the fix), or None."""
    if not isinstance(name, str) or not _TOKEN.fullmatch(name) or len(name) > MAX_NAME_CHARS:
        return (
            f"callback.headers name {name!r} is not a valid HTTP field name: use letters, "
            "digits and !#$%&'*+-.^_`|~ only (no spaces or colons), at most "
            f"{MAX_NAME_CHARS} characters"
        )
    if not isinstance(value, str) or not _VALUE.fullmatch(value) or len(value) > MAX_VALUE_CHARS:
        return (
            f"callback.headers[{name!r}] must be visible ASCII or latin-1 text (no CR, LF or "
            f"other control characters, nothing outside U+0000-U+00FF), at most "
            f"{MAX_VALUE_CHARS} characters: percent-encode or base64 anything else"
        )
    if value != value.strip(" \t"):
        return f"callback.headers[{name!r}] may not start or end with spaces or tabs"
    return None


def encode_value(value: str) -> bytes:
    """The bytes sent for a value that passed :func:`header_problem`."""
    return value.encode("latin-1")


#: RFC 9110 delta-seconds (a decimal fraction tolerated): no sign, no exponent, no NaN.
_SECONDS: Final = re.compile(r"\d{1,10}(\.\d+)?")


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP date), or None
    when it is absent or not one (then the caller's own backoff applies)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if _SECONDS.fullmatch(text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less one is read the same way
        return None
    return max(0.0, when.timestamp() - now)
