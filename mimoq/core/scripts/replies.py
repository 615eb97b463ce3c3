"""What the scripts answer, as named fields, decoded here once each (issue #22).

A script's reply is positional on the wire (an array, or a number that codes an outcome);
each one that holds more than a yes/no or a count is turned into a typed object by one
function here, so no caller reads ``reply[1]`` and a script that changes its reply changes
it in its ``.lua`` header and here. Redis answers strings as bytes or str (a decoding
connection), numbers as ints.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class GateVerdict(StrEnum):
    """What the breaker says about sending one call through an account now."""

    OPEN = "open"  # the account is healthy: send
    PROBE = "probe"  # paused, and this call is the fleet's one probe: send
    PAUSED = "paused"  # paused: defer the job
    EXPIRED = "expired"  # paused past MIMOQ_ACCOUNT_PAUSE_MAX_S: fail the job


@dataclass(frozen=True)
class Gate:
    verdict: GateVerdict
    seconds: float  # PROBE: the next interval; PAUSED/EXPIRED: until the next probe


def decode_gate(reply: Any) -> Gate:
    """breaker_gate.lua: ``{verdict, seconds}``."""
    verdict, seconds = reply
    return Gate(GateVerdict(_text(verdict)), float(_text(seconds)))


class Answer(StrEnum):
    """What cancel.lua did with one id (its header says what each means)."""

    cancelled = "cancelled"
    stopping = "stopping"
    in_flight = "in_flight"
    already_cancelled = "already_cancelled"
    already_finished = "already_finished"
    not_found = "not_found"
    invalid = "invalid"


@dataclass(frozen=True)
class ScriptAnswer:
    id: str
    answer: Answer
    #: ``cancelled``: the arq job JSON; ``already_finished``: its status; ``invalid``: why.
    detail: str


def decode_cancel(reply: Any) -> list[ScriptAnswer]:
    """cancel.lua: flat triples ``{id, answer, detail, ...}``, one per id given, in order,
    then one per chunk job cancelled with them."""
    text = [_text(x) for x in reply]
    return [ScriptAnswer(text[i], Answer(text[i + 1]), text[i + 2]) for i in range(0, len(text), 3)]


class RunCounted(IntEnum):
    """A finished job's count in its run (``count_finish`` of run_end_if_done.lua)."""

    NOT_COUNTED = 0  # counted before, or the run is gone
    COUNTED = 1
    ENDED = 2  # counted, and the run ended with it: this caller announces the end


def decode_run_finish(reply: Any) -> RunCounted:
    """run_finish.lua: ``count_finish``'s code."""
    return RunCounted(int(reply))


@dataclass(frozen=True)
class FinishedMany:
    counted: int  # jobs counted by this call (the others were counted before)
    ended: bool  # the run ended with them: this caller announces the end


def decode_finish_many(reply: Any) -> FinishedMany:
    """run_finish_many.lua: ``{counted, ended}``."""
    counted, ended = reply
    return FinishedMany(int(counted), int(ended) == 1)


class ResultWritten(IntEnum):
    """Whether result_unless_cancelled.lua wrote the record."""

    CANCELLED = 0  # the cancel marker came first: nothing written (record "cancelled")
    PUBLISHED = 1  # written, and its news published on the job's channel
    UNPUBLISHED = 2  # written; the publish refused (an ACL without the channel): waiters poll


@dataclass(frozen=True)
class ResultWrite:
    written: ResultWritten
    counted: RunCounted  # NOT_COUNTED for a job of no run


def decode_result_write(reply: Any) -> ResultWrite:
    """result_unless_cancelled.lua: ``{written, counted}``."""
    written, counted = reply
    return ResultWrite(ResultWritten(int(written)), RunCounted(int(counted)))


@dataclass(frozen=True)
class ResultHandOver:
    written: ResultWritten
    queued: bool  # the callback's delivery record and job written (False: one was pending)


def decode_result_hand_over(reply: Any) -> ResultHandOver:
    """result_hand_over.lua: ``{written, queued}``."""
    written, queued = reply
    return ResultHandOver(ResultWritten(int(written)), int(queued) == 1)


class Requeued(IntEnum):
    """What orphans_requeue.lua did with a dead worker's job."""

    NOT_OURS = 0  # the entry or the owner's beat changed since the sweep read them
    REQUEUED = 1
    NOTHING_TO_RUN = 2  # the job key is gone (finished or expired): entry dropped


def decode_requeue(reply: Any) -> Requeued:
    """orphans_requeue.lua: the outcome's code."""
    return Requeued(int(reply))
