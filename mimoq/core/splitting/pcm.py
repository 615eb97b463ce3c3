"""Samples as numpy arrays: WAV data read block by block, scaled to float, written as s16le."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, Final

import numpy as np
import numpy.typing as npt

from mimoq.core.audio import WAVE_FORMAT_IEEE_FLOAT, WavFormat

#: Frames are always 2-D: (frames, channels), in the file's own encoding.
Frames = npt.NDArray[np.generic]
Floats = npt.NDArray[np.float32]

_DTYPES: Final[dict[int, np.dtype[np.generic]]] = {
    8: np.dtype("u1"),
    16: np.dtype("<i2"),
    32: np.dtype("<i4"),
}
_READ_BYTES: Final = 1 << 20


def frame_dtype(fmt: WavFormat) -> np.dtype[np.generic]:
    """The numpy dtype one sample of ``fmt`` is held in (24-bit samples widen to int32)."""
    if fmt.audio_format == WAVE_FORMAT_IEEE_FLOAT:
        return np.dtype("<f4")
    if fmt.bits_per_sample == 24:
        return np.dtype("<i4")
    return _DTYPES[fmt.bits_per_sample]


def decode(data: bytes, fmt: WavFormat) -> Frames:
    """Whole frames of ``data`` (a trailing partial frame is dropped) as (frames, channels)."""
    usable = len(data) - len(data) % fmt.block_align
    if fmt.bits_per_sample == 24 and fmt.audio_format != WAVE_FORMAT_IEEE_FLOAT:
        raw = np.frombuffer(data, dtype=np.uint8, count=usable).reshape(-1, 3).astype(np.int32)
        # Little-endian 3-byte samples, sign-extended by shifting into the top of an int32.
        wide = (raw[:, 0] << 8 | raw[:, 1] << 16 | raw[:, 2] << 24) >> 8
        return wide.reshape(-1, fmt.channels)
    return np.frombuffer(
        data, dtype=frame_dtype(fmt), count=usable // (fmt.bits_per_sample // 8)
    ).reshape(-1, fmt.channels)


def to_float(frames: Frames, fmt: WavFormat) -> Floats:
    """Samples scaled to [-1, 1) as float32, whatever the encoding."""
    if fmt.audio_format == WAVE_FORMAT_IEEE_FLOAT:
        return frames.astype(np.float32, copy=False)
    if fmt.bits_per_sample == 8:  # 8-bit WAV is unsigned, centred on 128
        return (frames.astype(np.float32) - 128.0) / 128.0
    return frames.astype(np.float32) / float(1 << (fmt.bits_per_sample - 1))


def to_s16(samples: Floats) -> npt.NDArray[np.int16]:
    """Float samples as 16-bit integers, rounded and clipped (never wrapped)."""
    out: npt.NDArray[np.int16] = np.clip(np.rint(samples * 32768.0), -32768, 32767).astype(np.int16)
    return out


def to_bytes(frames: Frames, fmt: WavFormat) -> bytes:
    """Frames back in ``fmt``'s little-endian encoding (8/16-bit PCM and float32 only)."""
    if fmt.bits_per_sample == 24 and fmt.audio_format != WAVE_FORMAT_IEEE_FLOAT:
        wide = frames.astype("<i4").reshape(-1, 1).view(np.uint8).reshape(-1, 4)
        return wide[:, :3].tobytes()
    return frames.astype(frame_dtype(fmt), copy=False).tobytes()


def iter_pcm_blocks(
    f: BinaryIO, fmt: WavFormat, data_bytes: int | None, block_frames: int
) -> Iterator[Frames]:
    """Read ``data_bytes`` of samples (None: to the end) from ``f``, ``block_frames`` at a time.

    Only one block is held at a time: the memory used does not grow with the recording.
    """
    block_bytes = max(1, block_frames) * fmt.block_align
    left = data_bytes
    carry = b""
    while left is None or left > 0:
        want = block_bytes - len(carry)
        raw = f.read(want if left is None else min(want, left))
        if not raw:
            break
        if left is not None:
            left -= len(raw)
        data = carry + raw
        cut = len(data) - len(data) % fmt.block_align
        carry = data[cut:]
        if cut:
            yield decode(data[:cut], fmt)
    # A partial frame at the end is not audio.
