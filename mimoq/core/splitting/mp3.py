"""MP3 files walked frame by frame and split at frame boundaries, at quiet points if decodable."""

from __future__ import annotations

import math
import struct
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from mimoq.core.splitting.chunks import AudioChunk, OpenChunk, UnsupportedAudioError

# Bitrates in kbit/s by [version is MPEG-1][layer][index]; index 0 is "free format".
_KBPS: Final = {
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
# Sample rates by version bits (0: MPEG-2.5, 2: MPEG-2, 3: MPEG-1) and index.
_RATES: Final = {
    0: (11_025, 12_000, 8_000),
    2: (22_050, 24_000, 16_000),
    3: (44_100, 48_000, 32_000),
}
#: How far past garbage (a broken frame, a tag) the walker looks for the next frame.
MAX_RESYNC_BYTES: Final = 64 * 1024
#: Cuts are searched for among the frames of the last 20 s of each chunk.
SEARCH_S: Final = 20.0


@dataclass(frozen=True)
class FrameHeader:
    """The facts of one MPEG audio frame header that walking and timing need."""

    size: int  #: bytes of the whole frame, header included
    samples: int  #: samples per channel it decodes to
    sample_rate: int
    bitrate: int = 0  #: bits per second
    mpeg1: bool = True
    mono: bool = False

    @property
    def duration_s(self) -> float:
        return self.samples / self.sample_rate


def parse_frame_header(head: bytes) -> FrameHeader | None:
    """The frame header in the first 4 bytes of ``head``, or None if they are not one.

    Free-format frames (bitrate index 0) and reserved values are "not one": their size
    cannot be known from the header alone.
    """
    if len(head) < 4:
        return None
    (word,) = struct.unpack(">I", head[:4])
    if word >> 21 != 0x7FF:
        return None
    version = (word >> 19) & 3
    layer = 4 - ((word >> 17) & 3)  # bits 11, 10, 01 mean layers I, II, III
    bitrate_index = (word >> 12) & 15
    rate_index = (word >> 10) & 3
    padding = (word >> 9) & 1
    mono = (word >> 6) & 3 == 3
    if version == 1 or layer == 4 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    mpeg1 = version == 3
    bitrate = _KBPS[(mpeg1, layer)][bitrate_index] * 1000
    rate = _RATES[version][rate_index]
    if layer == 1:
        return FrameHeader((12 * bitrate // rate + padding) * 4, 384, rate, bitrate, mpeg1, mono)
    samples = 1152 if layer == 2 or mpeg1 else 576
    size = samples // 8 * bitrate // rate + padding
    return FrameHeader(size, samples, rate, bitrate, mpeg1, mono)


def id3v2_size(head: bytes) -> int:
    """Bytes of an ID3v2 tag at the start of ``head`` (0 when there is none)."""
    if len(head) < 10 or head[:3] != b"ID3":
        return 0
    size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
    footer = 10 if head[5] & 0x10 else 0
    return 10 + size + footer


def info_frame_count(frame: bytes, header: FrameHeader) -> int | None:
    """The number of audio frames a Xing/Info or VBRI header in ``frame`` declares.

    Encoders write one in a first, silent frame (LAME always does, for VBR and CBR alike):
    it is the only way to know a VBR file's length without reading every frame. The Xing
    tag follows the side information, whose size depends on the version and channel mode.
    """
    side = (17 if header.mono else 32) if header.mpeg1 else (9 if header.mono else 17)
    at = 4 + side
    if frame[at : at + 4] in (b"Xing", b"Info") and len(frame) >= at + 12:
        (flags,) = struct.unpack_from(">I", frame, at + 4)
        if flags & 1:
            (frames,) = struct.unpack_from(">I", frame, at + 8)
            return int(frames) or None
        return None
    if frame[36:40] == b"VBRI" and len(frame) >= 36 + 18:
        (frames,) = struct.unpack_from(">I", frame, 36 + 14)
        return int(frames) or None
    return None


#: A file whose first frames all share one bitrate is taken as constant-bitrate.
_CBR_PROBE_FRAMES: Final = 32
_ID3V1_BYTES: Final = 128


def mp3_duration_s(f: BinaryIO, size: int) -> float | None:
    """The playing time of the MP3 in ``f`` (``size`` bytes), or None if it has no frames.

    A Xing/Info/VBRI header gives it exactly; otherwise a file whose first frames share a
    bitrate is constant-bitrate (audio bytes x 8 / bitrate); anything else (VBR without a
    header) is walked frame by frame. Every MPEG version and layer has its own bitrate and
    sample-rate table (see :func:`parse_frame_header`): MPEG-2/2.5 files are not MPEG-1.
    """
    frames = iter_frames(f, keep_info=True)
    first = next(frames, None)
    if first is None:
        return None
    header = first.header
    f.seek(first.offset)
    count = info_frame_count(f.read(header.size), header)
    if count is not None:
        return count * header.samples / header.sample_rate
    probe = [first, *(frame for frame, _ in zip(frames, range(_CBR_PROBE_FRAMES), strict=False))]
    if all(p.header.bitrate == header.bitrate for p in probe):
        end = size
        f.seek(max(0, size - _ID3V1_BYTES))
        if f.read(3) == b"TAG":
            end -= _ID3V1_BYTES
        return max(0, end - first.offset) * 8 / header.bitrate
    return math.fsum(frame.header.duration_s for frame in iter_frames(f))


def is_info_frame(frame: bytes) -> bool:
    """True for a Xing/Info/VBRI frame: encoder metadata, decoded as silence or skipped."""
    return b"Xing" in frame[:64] or b"Info" in frame[:64] or frame[36:40] == b"VBRI"


@dataclass(frozen=True)
class Frame:
    """One audio frame of a file: where it is, and its header."""

    offset: int
    header: FrameHeader


def iter_frames(f: BinaryIO, *, keep_info: bool = False) -> Iterator[Frame]:
    """The audio frames of the MP3 in ``f``: tags, Xing/Info frames and garbage skipped
    (``keep_info``: a leading Xing/Info/VBRI frame is yielded like any other).

    After junk, a position counts as a frame only when the next frame follows right where
    its header says, so a stray 0xFF byte in a tag or broken frame is not mistaken for one.
    """
    end = f.seek(0, 2)
    f.seek(0)
    pos = id3v2_size(f.read(10))
    first = True
    while True:
        f.seek(pos)
        # The usual case, a frame right where the last one ended, reads 4 bytes; only
        # after junk is a window read and searched (most files have none).
        window = f.read(4)
        header = parse_frame_header(window)
        skip = 0
        if header is None:
            window += f.read(MAX_RESYNC_BYTES)
            skip = 1
            while skip + 4 <= len(window):
                header = parse_frame_header(window[skip : skip + 4])
                if header is not None and _confirmed(f, pos + skip, header):
                    break
                skip += 1
            else:
                return  # end of file, a trailing tag, or nothing but garbage left
        assert header is not None
        offset = pos + skip
        if offset + header.size > end:
            return  # a frame cut off at the end of the file
        if first:
            first = False
            f.seek(offset)
            if is_info_frame(f.read(header.size)) and not keep_info:
                pos = offset + header.size
                continue
        yield Frame(offset, header)
        pos = offset + header.size


def _confirmed(f: BinaryIO, offset: int, header: FrameHeader) -> bool:
    f.seek(offset + header.size)
    follower = f.read(4)
    return not follower or parse_frame_header(follower) is not None


def _frame_energies(path: Path, samples_per_frame: int) -> Iterator[float] | None:
    """Mean power of each decoded frame, streamed; None when the file cannot be decoded."""
    try:
        # numpy here, not at module level: mimoq.core.sources imports this module for its
        # frame parsing, which every producer loads, and numpy alone costs ~0.1 s there.
        import numpy as np
        import soundfile  # type: ignore[import-untyped]  # libsndfile decodes MP3 since 1.1

        sound = soundfile.SoundFile(str(path))
    except (ImportError, RuntimeError, OSError):
        return None

    def energies() -> Iterator[float]:
        with sound:
            for block in sound.blocks(blocksize=samples_per_frame, dtype="float32", always_2d=True):
                yield float(np.mean(np.square(block, dtype=np.float64)))

    return energies()


def _copy(src: BinaryIO, dst: BinaryIO, start: int, end: int) -> None:
    src.seek(start)
    left = end - start
    while left > 0:
        data = src.read(min(left, 1 << 20))
        if not data:
            break
        dst.write(data)
        left -= len(data)


def plan_cuts(
    sizes: Sequence[int], energies: Sequence[float] | None, *, max_bytes: int, search_frames: int
) -> list[int]:
    """Frame indices at which chunks end: greedy, each chunk at most ``max_bytes``.

    Each cut is at the quietest frame boundary among the last ``search_frames`` boundaries
    that fit (the latest of equally quiet ones), or at the last fitting one without
    energies. Raises ``UnsupportedAudioError`` if one frame alone is over the limit.
    """
    cuts: list[int] = []
    start = 0
    while start < len(sizes):
        total, end = 0, start
        while end < len(sizes) and total + sizes[end] <= max_bytes:
            total += sizes[end]
            end += 1
        if end == start:
            raise UnsupportedAudioError(f"an MP3 frame of {sizes[start]} bytes exceeds the limit")
        if end < len(sizes) and energies is not None:
            lo = max(start + 1, end - search_frames)
            # Cutting before frame i: judge by the quieter of the frames on both sides.
            scores = [min(energies[i - 1], energies[i]) for i in range(lo, end + 1)]
            best = min(scores)
            end = lo + max(i for i, s in enumerate(scores) if s <= best)
        cuts.append(end)
        start = end
    return cuts


def split_mp3(path: Path, open_chunk: OpenChunk, *, max_bytes: int) -> list[AudioChunk]:
    """Split the MP3 at ``path`` into chunk files of raw frames, each at most ``max_bytes``.

    Frames are cut between, never through, so every chunk is a valid MP3 stream (the first
    frame of a later chunk may lean on its predecessor's bit reservoir: a decoder loses at
    most those 26 ms, which a transcript does not notice). When the file decodes (soundfile),
    each cut is at the quietest frame boundary of the last 20 s before the limit. Memory is
    a few numbers per frame (~3 MB per hour, in arrays), never the audio.
    """
    offsets, sizes, durations = array("q"), array("q"), array("d")
    spf = 0
    with open(path, "rb") as f:
        for frame in iter_frames(f):
            spf = spf or frame.header.samples
            offsets.append(frame.offset)
            sizes.append(frame.header.size)
            durations.append(frame.header.duration_s)
        if not offsets:
            raise UnsupportedAudioError("no MPEG audio frames found in the MP3 file")
        decoded = _frame_energies(path, spf)
        energies = None
        if decoded is not None:
            energies = array("d", (e for e, _ in zip(decoded, range(len(offsets)), strict=False)))
            # A decoder that stops early (VBR without a Xing frame, damage) leaves frames
            # unjudged: infinitely loud, so no cut is placed there on a guess.
            energies.extend([math.inf] * (len(offsets) - len(energies)))
        search = max(1, int(SEARCH_S / durations[0]))
        cuts = plan_cuts(sizes, energies, max_bytes=max_bytes, search_frames=search)
        chunks: list[AudioChunk] = []
        start, clock = 0, 0.0
        for index, end in enumerate(cuts):
            first, stop = offsets[start], offsets[end - 1] + sizes[end - 1]
            span = math.fsum(durations[start:end])
            with open_chunk(index) as out:
                _copy(f, out, first, stop)
            chunks.append(AudioChunk(index, clock, clock + span, stop - first))
            start, clock = end, clock + span
    return chunks
