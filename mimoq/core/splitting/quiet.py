"""PURE: where to cut audio: the quietest stretch of a search region."""

from __future__ import annotations

import numpy as np

from mimoq.core.splitting.pcm import Floats


def quietest_cut(samples: Floats, window: int) -> int:
    """The offset (in frames of ``samples``) at the middle of its quietest stretch.

    ``samples`` is (frames, channels) float audio. Energy is summed over sliding windows of
    ``window`` frames (channels averaged, so a cut never lands mid-word in either one). Of
    the windows with the least energy, the last run of adjacent ones is taken, and the cut
    goes to its middle: in a pause, that is the middle of the pause, not its edge, so
    neither chunk starts or ends on a clipped syllable. Regions shorter than a window are
    cut at their end.
    """
    n = int(samples.shape[0])
    if n <= window or window < 1:
        return n
    mono = (
        samples.mean(axis=1, dtype=np.float64) if samples.ndim == 2 else samples.astype(np.float64)
    )
    power = np.concatenate(([0.0], np.cumsum(mono * mono)))
    energy = power[window:] - power[:-window]  # energy[i]: frames i .. i + window - 1
    # Rounding in the running sum differs by ~1e-12 between equal windows: call them equal.
    floor = energy.min() + 1e-9 * window
    quiet = energy <= floor
    last = int(np.flatnonzero(quiet)[-1])
    first = last
    while first > 0 and quiet[first - 1]:
        first -= 1
    # Window i is centred at frame i + window // 2; cut at the middle of the run's centres.
    return (first + last) // 2 + window // 2
