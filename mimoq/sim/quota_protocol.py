"""The seam between the simulator's HTTP app and its (optional) quota enforcement."""

from __future__ import annotations

from typing import Protocol


class Admission(Protocol):
    """A granted request; ``release`` is called once the response has been sent."""

    def release(self) -> None: ...


class QuotaPolicy(Protocol):
    """Decides, like an upstream would, whether a request is admitted.

    ``admit`` returns an ``Admission`` when the request may proceed, or the number of
    seconds after which a retry may succeed (sent as ``Retry-After`` if the policy says
    so) when it is rejected with a 429.
    """

    def admit(self, model: str, estimated_tokens: int) -> Admission | float: ...

    def record_usage(self, model: str, tokens: int) -> None: ...
