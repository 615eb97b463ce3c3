"""How much one MiMo call takes, and how much mimoq agrees to split (the sane upper bounds)."""

from __future__ import annotations

from typing import Final

from mimoq.core import dialect_constants as dc

#: The longest text one speech job may carry: split into ``MAX_SPEECH_CHARS`` parts, this
#: is 80 MiMo calls (roughly 3 hours of speech). Past it, a batch manifest is the right tool.
MAX_LONG_SPEECH_CHARS: Final = 200_000

#: The largest audio file one transcription job may name: 2 GiB is ~18 hours of 16 kHz mono
#: WAV, ~3 hours of 48 kHz stereo, and keeps RIFF's 32-bit sizes comfortably valid.
MAX_LONG_AUDIO_BYTES: Final = 2 << 30

#: Inline (data URI) audio past one call's limit is accepted up to this many characters:
#: the job itself travels through Redis, so a large file belongs on disk, not in the job.
MAX_LONG_AUDIO_B64_CHARS: Final = 64_000_000

#: Every chunk is cut this far below the per-call limit: a margin for the data URI prefix
#: and for a WAV header that grows (LIST chunks), so no chunk is ever refused for size.
CHUNK_MARGIN_BYTES: Final = 64 * 1024


def b64_chars(mime: str, size: int) -> int:
    """Characters of the data URI carrying ``size`` bytes of ``mime`` audio."""
    return len(f"data:{mime};base64,") + 4 * ((size + 2) // 3)


def fits_one_call(mime: str, size: int) -> bool:
    """True when ``size`` bytes of audio go to MiMo in a single request."""
    return b64_chars(mime, size) <= dc.MAX_AUDIO_B64_CHARS


def max_chunk_bytes(mime: str) -> int:
    """The most audio bytes (header included) one chunk may hold, with the safety margin."""
    prefix = len(f"data:{mime};base64,")
    return (dc.MAX_AUDIO_B64_CHARS - prefix) // 4 * 3 - CHUNK_MARGIN_BYTES
