"""MP3 frames walked and cut between, at quiet frame boundaries under the limit."""

from __future__ import annotations

import io
import itertools
import math
import struct
from pathlib import Path

import pytest
import soundfile

from mimoq.core.splitting.chunks import UnsupportedAudioError
from mimoq.core.splitting.mp3 import (
    FrameHeader,
    id3v2_size,
    iter_frames,
    parse_frame_header,
    plan_cuts,
    split_mp3,
)
from tests.batch.helpers import Chunks, gap_spans, tones


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("fffb9064", FrameHeader(417, 1152, 44_100)),  # MPEG-1 III 128 kbit/s 44.1 kHz
        ("fffb9264", FrameHeader(418, 1152, 44_100)),  # ... with padding
        ("fffbe064", FrameHeader(1044, 1152, 44_100)),  # 320 kbit/s
        ("fff398c4", FrameHeader(360, 576, 16_000)),  # MPEG-2 III 80 kbit/s 16 kHz
        ("fff318c4", FrameHeader(36, 576, 16_000)),  # MPEG-2 III 8 kbit/s
        ("ffe318c4", FrameHeader(72, 576, 8_000)),  # MPEG-2.5 III 8 kbit/s 8 kHz
        ("fffd9004", FrameHeader(522, 1152, 44_100)),  # MPEG-1 layer II 160 kbit/s
        ("ffff9004", FrameHeader(312, 384, 44_100)),  # MPEG-1 layer I 288 kbit/s
        ("fffb0064", None),  # free format: size unknowable
        ("fffbf064", None),  # bitrate index 15: invalid
        ("fffb9c64", None),  # sample rate index 3: reserved
        ("ffeb9064", None),  # version 01: reserved
        ("fff99064", None),  # layer 00: reserved
        ("49443304", None),  # "ID3": not a frame
        ("fffb", None),  # too short
    ],
)
def test_parse_frame_header(header: str, expected: FrameHeader | None) -> None:
    got = parse_frame_header(bytes.fromhex(header))
    assert (None if got is None else (got.size, got.samples, got.sample_rate)) == (
        None if expected is None else (expected.size, expected.samples, expected.sample_rate)
    )


@pytest.mark.parametrize(
    ("head", "size"),
    [
        (b"ID3\x04\x00\x00\x00\x00\x02\x01", 10 + 257),
        (b"ID3\x04\x00\x10\x00\x00\x00\x10", 10 + 16 + 10),  # footer flag
        (b"\xff\xfb\x90\x64" + bytes(6), 0),
        (b"ID3", 0),
    ],
)
def test_id3v2_size(head: bytes, size: int) -> None:
    assert id3v2_size(head) == size


@pytest.mark.parametrize(
    ("sizes", "energies", "max_bytes", "search", "cuts"),
    [
        ([10] * 10, None, 35, 2, [3, 6, 9, 10]),  # no energies: as late as fits
        ([10] * 10, [5, 5, 0, 5, 5, 5, 5, 5, 5, 5], 45, 3, [3, 7, 10]),  # quiet at frame 2
        ([10] * 10, [0, 5, 5, 5, 5, 5, 5, 5, 5, 5], 45, 2, [4, 8, 10]),  # quiet too early: latest
        ([10, 30, 10, 10], None, 40, 2, [2, 4]),  # VBR sizes
        ([10] * 4, None, 100, 2, [4]),  # fits whole
        ([10] * 6, [math.inf] * 6, 25, 2, [2, 4, 6]),  # undecoded frames: no guess, latest fit
    ],
)
def test_plan_cuts(
    sizes: list[int], energies: list[float] | None, max_bytes: int, search: int, cuts: list[int]
) -> None:
    assert plan_cuts(sizes, energies, max_bytes=max_bytes, search_frames=search) == cuts


def test_a_frame_over_the_limit_is_refused() -> None:
    with pytest.raises(UnsupportedAudioError, match="exceeds the limit"):
        plan_cuts([10, 50], None, max_bytes=40, search_frames=1)


def frame(header: str) -> bytes:
    size = parse_frame_header(bytes.fromhex(header))
    assert size is not None
    return bytes.fromhex(header) + bytes(size.size - 4)


def test_walk_skips_tags_info_frames_and_garbage() -> None:
    info = bytearray(frame("fffb9064"))
    info[36:40] = b"Xing"
    a, b = frame("fffb9064"), frame("fffb9264")
    tag = b"ID3\x04\x00\x00\x00\x00\x00\x05" + b"\xff\xfb\x90\x00\x00"  # a false sync inside
    data = tag + bytes(info) + a + b"junk\xff" + b + a + b"TAG" + bytes(125)
    frames = list(iter_frames(io.BytesIO(data)))
    assert [f.offset for f in frames] == [15 + 417, 15 + 417 + 417 + 5, 15 + 417 + 417 + 5 + 418]
    assert [f.header.size for f in frames] == [417, 418, 417]


def test_a_frame_cut_off_at_the_end_is_not_yielded() -> None:
    data = frame("fffb9064") * 2 + frame("fffb9064")[:100]
    assert len(list(iter_frames(io.BytesIO(data)))) == 2


PLAN = [(6.0 + i % 3, 0.6) for i in range(30)]  # 4 minutes, a pause every 6.6-8.6 s


@pytest.fixture(scope="module")
def mp3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mp3") / "talk.mp3"
    soundfile.write(path, tones(16_000, PLAN), 16_000, format="MP3", bitrate_mode="CONSTANT")
    return path


def test_split_mp3_tiles_the_frames_under_the_limit_at_pauses(mp3: Path) -> None:
    with open(mp3, "rb") as f:
        frames = list(iter_frames(f))
    stream = b"".join(mp3.read_bytes()[fr.offset : fr.offset + fr.header.size] for fr in frames)
    chunks = Chunks()
    spans = split_mp3(mp3, chunks, max_bytes=len(stream) // 3)
    assert len(spans) == 4
    assert b"".join(chunks.data[i] for i in range(len(spans))) == stream
    for span in spans:
        data = chunks.data[span.index]
        assert len(data) == span.bytes <= len(stream) // 3
        assert parse_frame_header(data[:4]) is not None
    for before, after in itertools.pairwise(spans):
        assert after.start_s == before.end_s
        # the encoder's delay shifts decoded audio by a frame or two: allow 0.1 s
        assert any(a - 0.1 <= before.end_s <= b + 0.1 for a, b in gap_spans(PLAN)), before.span()
    total = sum(fr.header.duration_s for fr in frames)
    assert math.isclose(spans[-1].end_s, total)


def test_split_mp3_without_a_decoder_cuts_as_late_as_fits(
    mp3: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mimoq.core.splitting.mp3 as module

    monkeypatch.setattr(module, "_frame_energies", lambda path, spf: None)
    with open(mp3, "rb") as f:
        sizes = [fr.header.size for fr in iter_frames(f)]
    spans = split_mp3(mp3, Chunks(), max_bytes=100_000)
    used = 0
    for span in spans[:-1]:
        used += span.bytes
        taken = next(i for i in range(len(sizes) + 1) if sum(sizes[:i]) == used)
        assert span.bytes + sizes[taken] > 100_000  # the next frame would not have fit


def test_no_frames_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.mp3"
    path.write_bytes(b"not audio at all" * 10 + struct.pack(">I", 0))
    with pytest.raises(UnsupportedAudioError, match="no MPEG audio frames"):
        split_mp3(path, Chunks(), max_bytes=1000)
