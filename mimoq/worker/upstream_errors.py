"""PURE: the one map from a failed MiMo call to the mimoq error tree.

A MiMo call fails in one of four ways, each caught where it happens and handed here:

==========================================  ==========================================
failure                                     mimoq error
==========================================  ==========================================
a non-2xx answer (:class:`ErrorAnswer`)     by status (``dialect.classify_http_error``)
``httpx.TimeoutException``                  ``UpstreamUnavailable`` (retried)
any other ``httpx.TransportError``          ``UpstreamUnavailable`` (retried)
``TruncatedAudioError`` (audio cut short)   ``UpstreamUnavailable`` (retried)
``AudioFormatError`` (not a usable WAV)     ``UpstreamResponseError`` (permanent)
``Base64StreamError`` (undecodable body)    ``UpstreamResponseError`` (permanent)
==========================================  ==========================================

What happens next (retry, defer, fail) is the runner's call (``worker.decide``), never this
module's or the account router's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from mimoq.core.audio import AudioFormatError
from mimoq.core.audio_stream import TruncatedAudioError
from mimoq.core.b64stream import Base64StreamError
from mimoq.core.dialect import classify_http_error
from mimoq.core.errors import MimoqError, UpstreamResponseError, UpstreamUnavailable


@dataclass(frozen=True)
class ErrorAnswer:
    """MiMo answered with a non-2xx status: its status, headers and (capped) body."""

    status: int
    body: bytes
    headers: Mapping[str, str]
    #: when it was read (wall clock): a ``Retry-After`` date is counted from it
    at: float


UpstreamFailure = ErrorAnswer | httpx.TransportError | Base64StreamError | AudioFormatError


def as_mimoq_error(failure: UpstreamFailure, *, secret: str | None = None) -> MimoqError:
    """The mimoq error for one failure of a MiMo call; ``secret`` (the call's API key) is
    redacted from its message: an upstream error body could echo the key back."""
    error: MimoqError
    if isinstance(failure, ErrorAnswer):
        error = classify_http_error(failure.status, failure.body, failure.headers, now=failure.at)
    elif isinstance(failure, httpx.TimeoutException):
        error = UpstreamUnavailable(f"MiMo did not answer in time ({type(failure).__name__})")
    elif isinstance(failure, httpx.TransportError):
        error = UpstreamUnavailable(f"connection to MiMo failed ({type(failure).__name__})")
    elif isinstance(failure, TruncatedAudioError):
        # Streamed sizes cannot be patched afterwards: a short body is a transport fault.
        error = UpstreamUnavailable(f"MiMo's audio was cut short: {failure}")
    elif isinstance(failure, Base64StreamError):
        error = UpstreamResponseError(f"MiMo's audio could not be decoded: {failure}")
    else:
        error = UpstreamResponseError(f"MiMo's audio is not a usable WAV: {failure}")
    if secret and secret in error.message:
        error.message = error.message.replace(secret, "[redacted]")
        error.args = (error.message,)
    return error
