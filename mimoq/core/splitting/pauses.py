"""PURE: where the pauses of a recording are, and the pieces it is sent to MiMo in.

Everything here works on the loudness of consecutive 20 ms windows (``window_energies``
makes them from a decoded recording) and answers in window indices, so it is fast, holds
no audio, and is tested with numbers. Two kinds of pieces:

* **segments** (``timestamps: "segment"``): one per utterance, cut in every pause of at
  least ``min_pause_s``, none longer than ``max_s``. The silence between them is not sent.
  Each knows where its speech starts and ends in the original recording.
* **chunks** (everything else): call-sized stretches, cut at the quietest point before the
  limit, tiling the recording.

With ``compact`` set, every pause longer than ``compact.min_s`` keeps only
``compact.keep_s`` of itself (half after the speech before it, half before the speech
after it): less audio is uploaded, and pieces still know their place in the original.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

#: Loudness is judged over 20 ms windows: about the shortest sound of a syllable.
WINDOW_S: Final = 0.02
#: Silences shorter than this inside speech (stop consonants, breaths between words) are
#: part of the speech, not pauses.
BRIDGE_S: Final = 0.2
#: Silence kept around a segment's speech, so no word is clipped at its edges.
PAD_S: Final = 0.1
#: Windows quieter than this (dB relative to full scale) are silence whatever the recording.
SILENCE_DB: Final = -70.0
#: In a recording of one level throughout, sound above this is speech, below it hiss.
STEADY_SPEECH_DB: Final = -45.0
#: Speech is at least this far above the recording's noise floor, or this share of its range.
MIN_CONTRAST_DB: Final = 6.0
CONTRAST_SHARE: Final = 0.3
#: ... and no more than this far below its loudest stretches: in a recording whose pauses
#: are digital silence, the fading tail of a word is pause, not speech.
MAX_DEPTH_DB: Final = 45.0

Energies = npt.NDArray[np.float64]
Flags = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Compaction:
    """Pauses longer than ``min_s`` are shortened to ``keep_s``."""

    min_s: float = 1.0
    keep_s: float = 0.3


@dataclass(frozen=True)
class Piece:
    """One stretch sent to MiMo: the window ranges of the recording it is made of, in order,
    and where its speech starts and ends (window indices of the original recording)."""

    spans: tuple[tuple[int, int], ...]
    speech_start: int
    speech_end: int

    @property
    def windows(self) -> int:
        """How many windows of audio it uploads."""
        return sum(end - start for start, end in self.spans)


def voiced(energies: Energies) -> Flags:
    """Which windows hold sound above the recording's noise floor.

    The floor and the loud end are the 10th and 99th percentiles of the windows' levels:
    a threshold between them follows each recording's own noise (a phone line, a quiet
    room, digital silence) rather than one fixed number.
    """
    if len(energies) == 0:
        return np.zeros(0, dtype=bool)
    db = 10 * np.log10(energies + 1e-12)
    floor, loud = np.percentile(db, 10), np.percentile(db, 99)
    threshold = floor + max(MIN_CONTRAST_DB, CONTRAST_SHARE * (loud - floor))
    threshold = max(threshold, loud - MAX_DEPTH_DB)
    if loud - floor < 2 * MIN_CONTRAST_DB:
        # Hardly any contrast: sound throughout (speech without pauses), or silence or
        # hiss throughout. Only the level tells them apart.
        threshold = STEADY_SPEECH_DB
    flags: Flags = (db > threshold) & (db > SILENCE_DB)
    return flags


def runs(flags: Flags) -> list[tuple[int, int]]:
    """The ``[start, end)`` ranges of consecutive True values."""
    padded = np.concatenate(([False], flags, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def speech_runs(energies: Energies, *, bridge: int) -> list[tuple[int, int]]:
    """Stretches of speech: voiced windows, with gaps shorter than ``bridge`` filled in."""
    merged: list[tuple[int, int]] = []
    for start, end in runs(voiced(energies)):
        if merged and start - merged[-1][1] < bridge:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def quietest(energies: Energies, lo: int, hi: int) -> int:
    """A cut in ``(lo, hi]``: the middle of the last run of the quietest windows there."""
    lo = max(lo, 0)
    if hi - lo <= 1:
        return hi
    region = energies[lo:hi]
    floor = region.min() + 1e-12
    quiet = np.flatnonzero(region <= floor)
    last = int(quiet[-1])
    first = last
    while first > 0 and region[first - 1] <= floor:
        first -= 1
    return max(lo + 1, lo + (first + last + 1) // 2)


def _windows(seconds: float) -> int:
    return max(1, round(seconds / WINDOW_S))


def segments(
    energies: Energies, *, max_s: float, min_pause_s: float, compact: Compaction | None = None
) -> list[Piece]:
    """Utterance-sized pieces: speech cut at every pause of at least ``min_pause_s``.

    Each segment takes ``PAD_S`` of the silence on either side (never more than half the
    pause); one longer than ``max_s`` is cut at its quietest moment before the limit.
    """
    n = len(energies)
    limit = _windows(max_s)
    utterances: list[tuple[int, int]] = []
    for start, end in speech_runs(energies, bridge=_windows(min(BRIDGE_S, min_pause_s))):
        if utterances and start - utterances[-1][1] < _windows(min_pause_s):
            utterances[-1] = (utterances[-1][0], end)
        else:
            utterances.append((start, end))
    pad = _windows(PAD_S)
    pieces: list[Piece] = []
    for i, (start, end) in enumerate(utterances):
        before = utterances[i - 1][1] if i else 0
        after = utterances[i + 1][0] if i + 1 < len(utterances) else n
        lo = max(start - pad, (before + start + 1) // 2)
        hi = min(end + pad, (end + after) // 2)
        while hi - lo > limit:
            search = min(limit // 2, _windows(10.0))
            cut = quietest(energies, lo + limit - search, lo + limit)
            pieces.append(_piece([(lo, cut)], max(start, lo), cut, energies, compact))
            lo = start = cut
        pieces.append(_piece([(lo, hi)], max(start, lo), min(end, hi), energies, compact))
    return pieces


def chunks(energies: Energies, *, max_s: float, compact: Compaction | None = None) -> list[Piece]:
    """Call-sized pieces of at most ``max_s`` each, tiling the recording (less the shortened
    pauses, with ``compact``), each cut at the quietest point of its last 20 s."""
    n = len(energies)
    spans = _kept(energies, compact) if compact else [(0, n)]
    limit = _windows(max_s)
    search = min(limit // 2, _windows(20.0))
    pieces: list[list[tuple[int, int]]] = []
    current: list[tuple[int, int]] = []
    used = 0
    for start, end in spans:
        while start < end:
            room = limit - used
            if end - start <= room:
                current.append((start, end))
                used += end - start
                break
            if current and used >= limit - search:
                # The piece is nearly full and the next span would overflow it: end it in
                # the (shortened) pause before that span.
                pieces.append(current)
                current, used = [], 0
                continue
            cut = quietest(energies, start + room - search, start + room)
            current.append((start, cut))
            pieces.append(current)
            current, used = [], 0
            start = cut
    if current:
        pieces.append(current)
    return [Piece(tuple(p), p[0][0], p[-1][1]) for p in pieces]


def _kept(energies: Energies, compact: Compaction) -> list[tuple[int, int]]:
    """The recording less the middle of every pause longer than ``compact.min_s``."""
    n = len(energies)
    longest, half = _windows(compact.min_s), _windows(compact.keep_s / 2)
    kept: list[tuple[int, int]] = []
    cursor = 0
    speech = speech_runs(energies, bridge=_windows(BRIDGE_S))
    gaps = []
    previous = 0
    for start, end in speech:
        gaps.append((previous, start))
        previous = end
    gaps.append((previous, n))
    for gap_start, gap_end in gaps:
        if gap_end - gap_start <= longest:
            continue
        # Leading and trailing silence of the recording keep only the half next to speech.
        keep_to = gap_start + half if gap_start > 0 else 0
        resume = gap_end - half if gap_end < n else n
        if keep_to > cursor:
            kept.append((cursor, keep_to))
        cursor = resume
    if cursor < n:
        kept.append((cursor, n))
    return [(a, b) for a, b in kept if b > a]


def _piece(
    spans: list[tuple[int, int]],
    speech_start: int,
    speech_end: int,
    energies: Energies,
    compact: Compaction | None,
) -> Piece:
    if compact is not None:
        (lo, hi) = spans[0]
        inner = [(a + lo, b + lo) for a, b in _kept(energies[lo:hi], compact)]
        spans = inner or spans
    return Piece(tuple(spans), speech_start, max(speech_start, speech_end))
