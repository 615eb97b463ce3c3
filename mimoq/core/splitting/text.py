"""PURE: long texts split at sentence boundaries (Chinese and Western), and transcripts joined."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import Final

_CJK: Final = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_CLOSERS: Final = "\"'”’»)\\]」』）】》"

#: Boundaries from the strongest to the weakest. A part is cut at the strongest level that
#: makes it fit; each pattern's match ends where the cut goes, so the whitespace after a
#: sentence stays with that sentence and every part starts with a word.
_LEVELS: Final = (
    # paragraph breaks
    re.compile(r"\n\s*\n\s*"),
    # sentence ends: Western ones need whitespace after (so 3.14 and e.g. "U.S.A" hold);
    # full-width ones do not (Chinese and Japanese put no space between sentences)
    re.compile(rf"[.!?…]+[{_CLOSERS}]*\s+|[。！？…]+[{_CLOSERS}]*\s*|\n\s*"),
    # clause ends: semicolons, colons, commas, dashes
    re.compile(rf"[;:,—–]+[{_CLOSERS}]*\s+|[；：，、—]+[{_CLOSERS}]*\s*"),
    # between words
    re.compile(r"\s+"),
    # between two CJK characters (each is a word of its own as far as cutting goes)
    re.compile(rf"(?<=[{_CJK}])(?=[{_CJK}])"),
)


def _pieces(text: str, pattern: re.Pattern[str]) -> list[str]:
    """``text`` cut after every match of ``pattern``; the pieces concatenate back to it."""
    cuts = [m.end() for m in pattern.finditer(text) if 0 < m.end() < len(text)]
    bounds = [0, *sorted(set(cuts)), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def _split(text: str, max_chars: int, level: int) -> list[str]:
    if len(text) <= max_chars:
        return [text]
    if level == len(_LEVELS):
        # One "word" longer than a whole part (a URL, a run of digits): nothing to respect.
        return [text[i : i + max_chars] for i in range(0, len(text), max_chars)]
    parts: list[str] = []
    current = ""
    for piece in _pieces(text, _LEVELS[level]):
        if len(piece) > max_chars:
            if current:
                parts.append(current)
            *whole, current = _split(piece, max_chars, level + 1)
            parts.extend(whole)  # the last sub-part may still take the pieces after it
        elif len(current) + len(piece) > max_chars:
            parts.append(current)
            current = piece
        else:
            current += piece
    if current:
        parts.append(current)
    return parts


def split_text(text: str, max_chars: int) -> list[str]:
    """Cut ``text`` into parts of at most ``max_chars`` characters, packed greedily.

    Cuts fall at paragraph breaks, then sentence ends, then clause punctuation, then
    between words, then between CJK characters; a single word longer than ``max_chars`` is
    the only thing ever cut through. ``"".join(parts) == text``, and no part is blank
    (whitespace-only pieces are kept with the part before them).
    """
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    body = text.rstrip()
    # Trailing whitespace is never worth a cut: it goes with the last part.
    parts = _split(body, max_chars, 0) if body else []
    if len(text) > len(body):
        parts.append(text[len(body) :])
    merged: list[str] = []
    for part in parts:
        if merged and not part.strip():
            merged[-1] += part  # may pass max_chars by whitespace only: never sent alone
        else:
            merged.append(part)
    return merged


_CJK_CHAR: Final = re.compile(rf"[{_CJK}。！？，、；：…]")


def join_transcripts(parts: Sequence[str]) -> str:
    """Transcripts of consecutive chunks as one text.

    Western text gets one space between parts; no space is put next to CJK text, which
    has none between words. Blank parts (silent chunks) are left out.
    """
    out = ""
    for part in (p.strip() for p in parts):
        if not part:
            continue
        if out and not (_CJK_CHAR.match(out[-1]) or _CJK_CHAR.match(part[0])):
            out += " "
        out += part
    return out
