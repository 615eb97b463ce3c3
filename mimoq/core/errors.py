"""The mimoq error tree, grouped by what the worker must do about each error.

::

    MimoqError
    ├── RetryableError            carries retry_after_s (None: use the backoff schedule)
    │   ├── RateLimitedError      429
    │   ├── UpstreamUnavailable   5xx, timeouts, connection errors
    │   └── Deferred              not a try: come back at retry_after_s
    │       ├── CapacityDeferred  the fleet limiter said "not yet" (quota)
    │       ├── ChunksPending     a long job's chunk jobs are still running
    │       └── TenantLimitDeferred    the job's tenant reached MIMOQ_TENANT_LIMITS
    ├── AccountPaused             no call made: the job's account is paused (circuit breaker)
    ├── JobCancelled              the job was cancelled: recorded as "cancelled", never retried
    └── PermanentError
        ├── InternalError         a bug of ours: logged with its traceback, reported plainly
        ├── InvalidRequestError   400/404/422 and our own validation (invalid_request_error)
        ├── AuthenticationError   401/403
        ├── PaymentRequiredError  402
        ├── ContentBlockedError   421
        └── UpstreamResponseError a 200 with no/invalid audio or transcript

Foreign exceptions are translated into this tree in exactly one place each: a failed MiMo
call (httpx, a non-2xx answer, undecodable audio) in ``worker.upstream_errors``, pydantic's
in the job validators, the callback client's in its own; the tree is translated into arq
behaviour in exactly one place (``worker.runner``).

Any of them may carry an :class:`AccountPause`: the account router's record that the
call's account is paused. The router only records it; ``worker.decide`` alone turns it into
a deferral (or, once the pause has outlived its maximum, a failure).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class AccountPause:
    """What the account router learned about a call's account: its breaker holds it paused.

    ``retry_after_s``: when to look again (the next probe, at most one base interval away);
    ``expired``: the pause has outlived ``MIMOQ_ACCOUNT_PAUSE_MAX_S``, and this is the
    account's error, the one its waiting jobs fail with.
    """

    account: str
    retry_after_s: float = 0.0
    expired: PermanentError | None = None


class MimoqError(Exception):
    """Base of every error mimoq raises on purpose."""

    error_type: ClassVar[str] = "mimoq_error"
    #: Set by the account router when the call's account is paused (see the module's doc).
    account_pause: AccountPause | None = None

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape used in results and callbacks: never carries secrets."""
        out: dict[str, Any] = {"type": self.error_type, "message": self.message}
        if self.status is not None:
            out["status"] = self.status
        return out


class RetryableError(MimoqError):
    """The same request may succeed later."""

    error_type = "upstream_error"

    def __init__(
        self, message: str, *, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after_s = retry_after_s


class RateLimitedError(RetryableError):
    error_type = "rate_limit_error"


class UpstreamUnavailable(RetryableError):
    error_type = "upstream_unavailable_error"


class Deferred(RetryableError):
    """Not an attempt: the job is put back until ``retry_after_s``; its tries are not spent.

    ``queued``: a script has already put the job's place in the queue at that time (a
    limiter slot's, which moves with the slot; a parent's, which its last chunk moves), so
    the worker must leave the place where it is.
    """

    error_type = "deferred"

    def __init__(
        self, message: str, *, retry_after_s: float | None = None, queued: bool = False
    ) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.queued = queued


class CapacityDeferred(Deferred):
    """The fleet-wide limiter has no capacity until ``retry_after_s`` from now."""

    error_type = "capacity_deferred"


class TenantLimitDeferred(Deferred):
    """The job's tenant has used its limit (``MIMOQ_TENANT_LIMITS``) until its window frees."""

    error_type = "tenant_limit"


class ChunksPending(Deferred):
    """A long job's chunk jobs are still running; the parent looks again at ``retry_after_s``.

    Kept apart from ``CapacityDeferred`` so that waiting for chunks is never counted (or
    graphed) as quota saturation.
    """

    error_type = "chunks_pending"


class AccountPaused(MimoqError):
    """The account the job is routed to is paused by its circuit breaker (out of funds,
    revoked key, persistent 429s), so no call was made; ``account_pause`` says what the
    router learned (``worker.decide`` defers the job, or fails it once the pause expired)."""

    error_type = "account_paused"

    def __init__(self, pause: AccountPause) -> None:
        super().__init__(f"account {pause.account} is paused")
        self.account_pause = pause


class JobCancelled(MimoqError):
    """The job was cancelled (docs/cancel.md): its MiMo call is refused before it is
    granted, or closed if it was under way; the runner records it as ``cancelled``."""

    error_type = "cancelled"


class PermanentError(MimoqError):
    """Retrying the same request cannot help."""

    error_type = "permanent_error"


class InternalError(PermanentError):
    """An unexpected exception inside the worker; the details are in its logs, not the result."""

    error_type = "internal_error"


class InvalidRequestError(PermanentError):
    """The job asks for something MiMo cannot do, or is malformed; ``param`` names the field."""

    error_type = "invalid_request_error"

    def __init__(
        self, message: str, *, param: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.param = param

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.param is not None:
            out["param"] = self.param
        return out


class AuthenticationError(PermanentError):
    error_type = "authentication_error"


class PaymentRequiredError(PermanentError):
    error_type = "payment_required_error"


class ContentBlockedError(PermanentError):
    error_type = "content_blocked_error"


class UpstreamResponseError(PermanentError):
    """MiMo answered 200 but the body has no usable audio or transcript."""

    error_type = "upstream_response_error"


class ConfigurationError(MimoqError):
    """Settings that cannot work (for example a ``tp-`` key with no region); fatal at start-up.

    ``fix``, when given, is what to do about it, kept apart from the cause for reports that
    show them separately (``mimoq doctor``); the message is both, as one line.
    """

    error_type = "configuration_error"

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(f"{message}: {fix}" if fix else message)
        self.cause = message
        self.fix = fix
