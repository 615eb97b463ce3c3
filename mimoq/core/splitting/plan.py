"""PURE: a long job's fan-out plan (its chunk jobs, in order) and the ids of those jobs."""

from __future__ import annotations

import hashlib
from typing import Final, Literal

from pydantic import BaseModel

from mimoq.core.splitting.chunks import clock

#: Where a parent keeps its chunk files in storage: ``chunks/<parent id>/<n>.<ext>``.
CHUNKS_DIR: Final = "chunks"
_MAX_ID: Final = 128


def child_id(parent_id: str, index: int) -> str:
    """``<parent>.p007``: the id of chunk ``index``'s job, the same on every run.

    A parent id too long to take the suffix is shortened and made unique again with a hash.
    """
    suffix = f".p{index:03d}"
    if len(parent_id) + len(suffix) <= _MAX_ID:
        return parent_id + suffix
    digest = hashlib.sha256(parent_id.encode()).hexdigest()[:12]
    return f"{parent_id[: _MAX_ID - len(suffix) - 13]}-{digest}{suffix}"


def chunk_metadata(parent_id: str, index: int) -> dict[str, str | int]:
    """The ``metadata`` of chunk ``index``'s job (and so of its result)."""
    return {"parent": parent_id, "chunk": index}


def chunk_of(job_id: str, metadata: object) -> tuple[str, int] | None:
    """The parent id and index of chunk job ``job_id``, read from its ``metadata``; None
    for any other job. Metadata naming a parent is believed only on the job whose id is that
    chunk's id (any producer may write such metadata; only the parent enqueues that id)."""
    if not isinstance(metadata, dict):
        return None
    parent, index = metadata.get("parent"), metadata.get("chunk")
    if not isinstance(parent, str) or type(index) is not int or index < 0:
        return None
    return (parent, index) if child_id(parent, index) == job_id else None


def chunk_key(parent_id: str, index: int, extension: str) -> str:
    """The storage key of chunk ``index``'s file (input audio, or a part's speech)."""
    return f"{chunks_prefix(parent_id)}/{index:04d}{extension}"


def chunks_prefix(parent_id: str) -> str:
    """The storage prefix of every chunk file of ``parent_id`` (removed when it ends)."""
    return f"{CHUNKS_DIR}/{parent_id}"


class ChildSpec(BaseModel):
    """One chunk job: which part of the parent's input it covers."""

    index: int
    job_id: str
    #: Transcription: the chunk's time range in the recording, in seconds.
    start_s: float | None = None
    end_s: float | None = None
    #: Speech: the part's character range in the text.
    start_char: int | None = None
    end_char: int | None = None

    def describe(self, total: int) -> str:
        """``chunk 3/7 (4:12.0-8:03.5)``, for error messages."""
        where = ""
        if self.start_s is not None and self.end_s is not None:
            where = f" ({clock(self.start_s)}-{clock(self.end_s)})"
        elif self.start_char is not None and self.end_char is not None:
            where = f" (characters {self.start_char}-{self.end_char})"
        return f"chunk {self.index + 1}/{total}{where}"


class FanoutPlan(BaseModel):
    """What a parent job split into, kept in Redis while its chunks run."""

    parent_id: str
    kind: Literal["speech", "transcription"]
    children: list[ChildSpec]
