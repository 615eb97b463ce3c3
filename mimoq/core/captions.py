"""PURE: transcripts with segments as files: JSON, plain text, SubRip (.srt) and WebVTT."""

from __future__ import annotations

from collections.abc import Sequence

from mimoq.core import wire
from mimoq.core.jobs import Segment


def _stamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _cue_text(text: str) -> str:
    # A blank line ends a cue in both formats: keep each cue's text on non-blank lines.
    return "\n".join(line for line in text.strip().splitlines() if line.strip())


def srt(segments: Sequence[Segment]) -> str:
    """SubRip: numbered cues, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``."""
    cues = [
        f"{n}\n{_stamp(s.start, ',')} --> {_stamp(s.end, ',')}\n{_cue_text(s.text)}\n"
        for n, s in enumerate(segments, 1)
    ]
    return "\n".join(cues)


def vtt(segments: Sequence[Segment]) -> str:
    """WebVTT: a ``WEBVTT`` line, then cues ``HH:MM:SS.mmm --> HH:MM:SS.mmm``."""
    cues = [
        f"{_stamp(s.start, '.')} --> {_stamp(s.end, '.')}\n{_cue_text(s.text)}\n" for s in segments
    ]
    return "\n".join(["WEBVTT\n", *cues])


def render(text: str, segments: Sequence[Segment] | None, response_format: str) -> str:
    """The transcript file's content in ``response_format`` (json, text, srt or vtt)."""
    if response_format == "srt":
        return srt(segments or [])
    if response_format == "vtt":
        return vtt(segments or [])
    if response_format == "json":
        body: dict[str, object] = {"text": text}
        if segments is not None:
            body["segments"] = [s.model_dump() for s in segments]
        return wire.dumps(body) + "\n"
    return text + "\n"
