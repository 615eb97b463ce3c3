"""Pause finding and piece planning, on loudness numbers and on tones with gaps at known times."""

from __future__ import annotations

import numpy as np
import pytest

from mimoq.core import captions
from mimoq.core.jobs import Segment
from mimoq.core.splitting import pauses
from mimoq.core.splitting.pauses import WINDOW_S, Compaction

W = WINDOW_S
LOUD, QUIET = 0.05, 1e-9


def energies(plan: list[tuple[float, float]], *, noise: float = QUIET) -> np.ndarray:
    """Window energies: for each (speech_s, pause_s), loud windows then quiet ones."""
    out: list[float] = []
    for speech_s, pause_s in plan:
        out += [LOUD] * round(speech_s / W) + [noise] * round(pause_s / W)
    rng = np.random.default_rng(14)
    return np.asarray(out) * rng.uniform(0.5, 1.5, len(out))


def test_segments_are_cut_in_every_pause_and_know_their_speech() -> None:
    plan = [(2.0, 0.6), (3.0, 4.0), (1.2, 0.8), (2.5, 0.0)]
    pieces = pauses.segments(energies(plan), max_s=30, min_pause_s=0.5)
    starts, clock = [], 0.0
    for speech_s, pause_s in plan:
        starts.append((clock, clock + speech_s))
        clock += speech_s + pause_s
    got = [t * W for p in pieces for t in (p.speech_start, p.speech_end)]
    assert got == pytest.approx([t for pair in starts for t in pair], abs=W)
    # Each takes 0.1 s of silence on either side (no more than half the pause), no more.
    assert pieces[1].spans[0][0] * W == pytest.approx(2.6 - 0.1, abs=W)
    assert sum(p.windows for p in pieces) * W < sum(s for s, _ in plan) + 8 * 0.1 + W


def test_short_gaps_inside_speech_do_not_cut_a_segment() -> None:
    # 0.15 s stops between words and a 0.3 s breath: one utterance at min_pause_s 0.5.
    plan = [(1.0, 0.15), (1.0, 0.3), (1.0, 2.0), (1.0, 0.0)]
    pieces = pauses.segments(energies(plan), max_s=30, min_pause_s=0.5)
    got = [t * W for p in pieces for t in (p.speech_start, p.speech_end)]
    assert got == pytest.approx([0.0, 3.45, 5.45, 6.45], abs=W)


def test_a_segment_never_exceeds_the_limit() -> None:
    # 75 s of speech with nothing but 0.1 s dips: cut at its quietest moments.
    plan = [(4.9, 0.1)] * 15
    pieces = pauses.segments(energies(plan), max_s=30, min_pause_s=0.5)
    assert len(pieces) == 3
    assert all(p.windows * W <= 30 + 1e-9 for p in pieces)
    # The pieces tile the speech without gap or overlap.
    assert [p.spans[0][0] for p in pieces[1:]] == [p.spans[-1][1] for p in pieces[:-1]]


def test_the_noise_floor_is_the_recordings_own() -> None:
    # A phone line: pauses are hiss 30 dB below speech, not digital silence.
    plan = [(2.0, 1.5), (2.0, 1.5), (2.0, 0.0)]
    pieces = pauses.segments(energies(plan, noise=LOUD / 1000), max_s=30, min_pause_s=0.5)
    assert len(pieces) == 3


def test_silence_alone_has_no_segments() -> None:
    assert pauses.segments(np.full(500, QUIET), max_s=30, min_pause_s=0.5) == []


def test_compaction_shortens_only_long_pauses_and_keeps_their_edges() -> None:
    plan = [(2.0, 0.8), (2.0, 3.0), (2.0, 1.5), (2.0, 0.0)]
    e = energies(plan)
    (piece,) = pauses.chunks(e, max_s=200, compact=Compaction(min_s=1.0, keep_s=0.3))
    # The 0.8 s pause stays whole; 3.0 s and 1.5 s become 0.3 s each (0.15 + 0.15).
    assert piece.windows * W == pytest.approx(8.0 + 0.8 + 0.3 + 0.3, abs=2 * W)
    assert piece.spans == ((0, 248), (382, 498), (557, 665))
    plain = pauses.chunks(e, max_s=200)
    assert [p.spans for p in plain] == [((0, len(e)),)]


def test_chunks_tile_the_recording_under_the_limit_cutting_in_pauses() -> None:
    plan = [(45.0, 1.0)] * 6  # 276 s: two chunks of at most 200 s
    e = energies(plan)
    pieces = pauses.chunks(e, max_s=200)
    assert len(pieces) == 2 and pieces[0].spans[0][0] == 0 and pieces[-1].spans[-1][1] == len(e)
    assert pieces[0].spans[-1][1] == pieces[1].spans[0][0]
    cut_s = pieces[0].spans[-1][1] * W
    assert 183.0 < cut_s < 184.0  # in the pause after the 4th stretch of speech
    assert all(p.windows * W <= 200 for p in pieces)


def test_captions() -> None:
    segments = [
        Segment(start=0.3, end=2.25, text="Hello there."),
        Segment(start=3661.5, end=3663.0, text="An hour\n\nlater."),
    ]
    assert captions.srt(segments) == (
        "1\n00:00:00,300 --> 00:00:02,250\nHello there.\n\n"
        "2\n01:01:01,500 --> 01:01:03,000\nAn hour\nlater.\n"
    )
    assert captions.vtt(segments) == (
        "WEBVTT\n\n00:00:00.300 --> 00:00:02.250\nHello there.\n\n"
        "01:01:01.500 --> 01:01:03.000\nAn hour\nlater.\n"
    )
    assert captions.render("Hello there.", segments[:1], "json") == (
        '{"text":"Hello there.","segments":[{"start":0.3,"end":2.25,"text":"Hello there."}]}\n'
    )
    assert captions.render("Hi.", None, "json") == '{"text":"Hi."}\n'
    assert captions.render("Hi.", None, "text") == "Hi.\n"
