"""PURE: the pacing target ``MIMOQ_LIMIT_TARGET=auto`` stands for (docs/scheduling.md).

The limiter paces at ``target`` of the quota; the slack ``1 - target`` is what absorbs the
spread between our grant times and MiMo's receive times. The hard guard's margin (the
measured grant-to-send lag, EWMA + 4 deviations) is capped at half that slack,
``window x (1/target - 1) / 2``, so the guard never paces below the target. ``auto`` is the
highest target of ``AUTO_TARGETS`` whose cap still covers ``AUTO_LAG_S``: at MiMo's real
60 s window that is 0.99 (cap 0.30 s); on the compressed windows of the benches and tests
(10 s and shorter) the cap at 0.99 is 50 ms or less, which a loaded host's lag outruns, so
they keep 0.98.
"""

from __future__ import annotations

from typing import Final

#: The targets ``auto`` chooses from, highest first; the last is the floor.
AUTO_TARGETS: Final = (0.995, 0.99, 0.985, 0.98)
#: The grant-to-send lag (seconds, its p99-like bound) the guard's margin must still cover.
#: A 2-core host loaded by ~8 engineers measured lags that outran a 50 ms cap (docs/scheduling.md:
#: one 429 at 0.99 on a 10 s window) and stayed inside 0.3 s (0.99 and 0.995
#: at a 60 s window with 4 workers and ~600 ms calls: 0 x 429, issue #22); 0.25 s keeps
#: 0.995 (cap 0.15 s) out of the default.
AUTO_LAG_S: Final = 0.25
#: The value of ``MIMOQ_LIMIT_TARGET`` that asks for this choice.
AUTO: Final = "auto"


def margin_cap_s(window_s: float, target: float) -> float:
    """The widest guard margin at ``target``: half the pacing slack of one window."""
    return window_s * (1 / target - 1) / 2


def auto_target(window_s: float, lag_s: float = AUTO_LAG_S) -> float:
    """The highest target whose guard margin cap still covers ``lag_s`` at ``window_s``
    (the floor, 0.98, when none does)."""
    for target in AUTO_TARGETS:
        if margin_cap_s(window_s, target) >= lag_s:
            return target
    return AUTO_TARGETS[-1]
