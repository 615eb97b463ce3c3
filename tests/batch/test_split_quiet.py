"""The cut goes to the middle of the quietest stretch of the search region."""

from __future__ import annotations

import numpy as np
import pytest

from mimoq.core.splitting.quiet import quietest_cut


def signal(spec: list[tuple[int, float]]) -> np.ndarray:
    """Frames of constant-amplitude noise: (length, amplitude) runs, deterministic."""
    rng = np.random.default_rng(7)
    runs = [amp * rng.uniform(-1, 1, n) for n, amp in spec]
    return np.concatenate(runs).astype(np.float32)[:, None]


@pytest.mark.parametrize(
    ("spec", "window", "lo", "hi"),
    [
        # one silent gap: its middle
        ([(1000, 0.5), (200, 0.0), (1000, 0.5)], 20, 1099, 1101),
        # two equal gaps: the middle of the later one (a longer first chunk)
        ([(500, 0.5), (100, 0.0), (500, 0.5), (100, 0.0), (300, 0.5)], 20, 1149, 1151),
        # no silence: somewhere in the quietest stretch of noise
        ([(400, 0.5), (300, 0.05), (400, 0.5)], 20, 410, 690),
        # shorter than a window: cut at the end
        ([(10, 0.5)], 20, 10, 10),
    ],
)
def test_quietest_cut(spec: list[tuple[int, float]], window: int, lo: int, hi: int) -> None:
    assert lo <= quietest_cut(signal(spec), window) <= hi


def test_channels_are_averaged_so_a_cut_is_quiet_in_both() -> None:
    left = signal([(1000, 0.5), (200, 0.0), (1000, 0.5)])[:, 0]
    right = signal([(300, 0.5), (100, 0.0), (1800, 0.5)])[:, 0]
    both = np.stack([left, right], axis=1)
    # Only the left gap is quiet in the left channel; the right is loud there: the combined
    # quietest point is neither channel's gap alone but the least energy overall.
    cut = quietest_cut(both, 20)
    energy = both.mean(axis=1) ** 2
    window = energy[cut - 10 : cut + 10].sum()
    assert window <= min(energy[i : i + 20].sum() for i in range(0, len(energy) - 20, 5)) + 1e-6
