"""The home of mimoq's Lua scripts (issue #22): each one a ``<name>.lua`` file here, declared
in ``SCRIPTS`` with the preludes it runs after, built by ``named`` once per process and run
through ``LuaScript`` (by SHA, loaded on ``NOSCRIPT``); ``replies`` decodes what the scripts
answer. No module registers or ``EVAL``s a script of its own.

The scripts after a prelude of ``LIBRARY_PRELUDES`` (the limiter's decisions) also form one
Redis function library with it, ``LuaLibrary``; ``in_library`` gives each as a function of
that library, which is how they run."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any, Final, cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError, ResponseError

#: What a script's KEYS and ARGV may hold (redis-py encodes them).
Arg = str | bytes | int | float


@cache
def source(name: str) -> str:
    """The text of ``<name>.lua`` in this package (read once per process)."""
    return resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


class LuaScript:
    """One script, hashed once per process (``redis.register_script`` hashes the source on
    every call): run by ``EVALSHA`` alone, loaded with ``SCRIPT LOAD`` only after Redis
    answers ``NOSCRIPT`` (it restarted or was flushed). Never ``EVAL``, which sends and
    hashes the whole source on every call."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 (Redis names scripts so)

    async def run(self, redis: Redis, keys: Sequence[Arg], args: Sequence[Arg] = ()) -> Any:
        """Run it: one ``EVALSHA`` (two more commands only after a ``NOSCRIPT``)."""
        try:
            return await redis.evalsha(self.sha, len(keys), *_flat(keys, args))  # type: ignore[misc]
        except NoScriptError:
            await redis.script_load(self.text)
            return await redis.evalsha(self.sha, len(keys), *_flat(keys, args))  # type: ignore[misc]

    def queue(self, pipe: Pipeline, keys: Sequence[Arg], args: Sequence[Arg] = ()) -> None:
        """Queue it on ``pipe`` as a bare ``EVALSHA`` (a registered script on a pipeline
        costs a ``SCRIPT EXISTS`` round trip first); the caller passes its reply to
        ``settle``, to run it again on its own if it was not loaded."""
        pipe.evalsha(self.sha, len(keys), *_flat(keys, args))

    def queue_load(self, pipe: Pipeline) -> None:
        """Queue ``SCRIPT LOAD`` on ``pipe``, ahead of a ``queue`` of it that must not fail
        (after a ``NOSCRIPT``: Redis restarted or was flushed)."""
        pipe.script_load(self.text)

    async def settle(
        self, redis: Redis, reply: Any, keys: Sequence[Arg], args: Sequence[Arg] = ()
    ) -> Any:
        """The reply of a queued call (pipeline run with ``raise_on_error=False``): after
        ``NOSCRIPT``, the script is loaded and run again here; any other error is raised."""
        if isinstance(reply, NoScriptError):
            return await self.run(redis, keys, args)
        if isinstance(reply, Exception):
            raise reply
        return reply


def not_loaded(error: BaseException) -> bool:
    """Whether Redis refused a call because its script or function library is not loaded
    (it restarted, or was flushed): loading it and calling again is the answer."""
    if isinstance(error, NoScriptError):
        return True
    return isinstance(error, ResponseError) and _NOT_FOUND.search(str(error)) is not None


#: Redis's answer to an FCALL of a function no library holds, alone or as redis-py reports it
#: for a pipeline ("Command # 1 (FCALL ...) of pipeline caused error: ...").
_NOT_FOUND: Final = re.compile(
    r"^Function not found|of pipeline caused error: \W*Function not found"
)


class LuaLibrary:
    """Scripts that share one prelude, loaded as one Redis function library (``FUNCTION
    LOAD``, Redis 7): the prelude's functions are defined once per server, where a script
    sent by ``EVALSHA`` defines them all again on every call (about 15 of the 19 us the
    limiter's prelude cost a call: ``bench/lua_overhead.py``).

    Each script becomes a function of ``KEYS`` and ``ARGV`` with its text as the body. The
    library and its functions are named after a hash of the whole code, as a script is by
    its SHA: two versions of mimoq on one Redis each call their own, and a library loaded
    again (``REPLACE``) is always the same code. Functions are kept by Redis like data
    (saved, replicated), so a restarted or promoted server usually has them already.
    """

    def __init__(self, name: str, prelude: str, scripts: Mapping[str, str]) -> None:
        body = "\n".join([prelude, *scripts.values()])
        digest = hashlib.sha1(body.encode()).hexdigest()[:12]  # noqa: S324 (a name, not a secret)
        self.name = f"{name}_{digest}"
        parts = [f"#!lua name={self.name}", prelude]
        self.functions: dict[str, LibraryFunction] = {}
        for script, text in scripts.items():
            function = f"{script}_{digest}"
            self.functions[script] = LibraryFunction(self, function)
            parts.append(
                f"redis.register_function('{function}', function(KEYS, ARGV)\n{text}\nend)"
            )
        self.code = "\n".join(parts)

    async def load(self, redis: Redis) -> None:
        """``FUNCTION LOAD REPLACE``: idempotent, and two workers loading at once both win."""
        await redis.execute_command("FUNCTION", "LOAD", "REPLACE", self.code)  # type: ignore[no-untyped-call]


class LibraryFunction:
    """One script of a ``LuaLibrary``, run by ``FCALL`` as a ``LuaScript`` is by
    ``EVALSHA``: the library is loaded only after Redis answers that the function is not
    found."""

    def __init__(self, library: LuaLibrary, name: str) -> None:
        self.library = library
        self.name = name

    async def run(self, redis: Redis, keys: Sequence[Arg], args: Sequence[Arg] = ()) -> Any:
        """Run it: one ``FCALL`` (two more commands only after "Function not found")."""
        try:
            return await self._call(redis, keys, args)
        except ResponseError as exc:
            if not not_loaded(exc):
                raise
        await self.library.load(redis)
        return await self._call(redis, keys, args)

    async def _call(self, redis: Redis, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        flat = _flat(keys, args)
        return await redis.execute_command("FCALL", self.name, len(keys), *flat)  # type: ignore[no-untyped-call]

    def queue(self, pipe: Pipeline, keys: Sequence[Arg], args: Sequence[Arg] = ()) -> None:
        """Queue its ``FCALL`` on ``pipe``; the caller passes the reply to ``settle``."""
        pipe.execute_command("FCALL", self.name, len(keys), *_flat(keys, args))

    def queue_load(self, pipe: Pipeline) -> None:
        """Queue the library's load on ``pipe``, ahead of a ``queue`` of it that must not
        fail (after a "Function not found")."""
        pipe.execute_command("FUNCTION", "LOAD", "REPLACE", self.library.code)

    async def settle(
        self, redis: Redis, reply: Any, keys: Sequence[Arg], args: Sequence[Arg] = ()
    ) -> Any:
        """The reply of a queued call (pipeline run with ``raise_on_error=False``): after
        "Function not found", the library is loaded and the call run again here; any other
        error is raised."""
        if isinstance(reply, Exception) and not_loaded(reply):
            return await self.run(redis, keys, args)
        if isinstance(reply, Exception):
            raise reply
        return reply


def _flat(keys: Sequence[Arg], args: Sequence[Arg]) -> list[str]:
    # redis-py types every key and argument as str; it encodes bytes and numbers as well
    return cast(list[str], [*keys, *args])


#: Every script run through ``named``: its name (``<name>.lua``) and the preludes (files of
#: shared locals and functions, never run alone) sent before it, in order.
SCRIPTS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        # the public ones (docs/wire-format.md): foreign producers send these texts as they are
        "enqueue": (),
        "cancel": (),
        # the account breaker (worker/accounts/breaker.py); breaker_now.lua reads Redis's clock
        "breaker_gate": ("breaker_now",),
        "breaker_trip": ("breaker_now",),
        "breaker_resume": (),
        "route_set": (),
        # runs (core/runs.py), and the worker's result write that counts a job in its run
        "run_begin": (),
        "run_finish": ("run_end_if_done",),
        "run_finish_many": ("run_end_if_done",),
        "run_seal": ("run_end_if_done",),
        "run_cancelling": ("run_end_if_done",),
        "result_unless_cancelled": ("run_end_if_done", "result_put"),
        # a job of no run with a callback: its record and the callback's hand-over at once
        "result_hand_over": ("result_put", "delivery_put"),
        # usage (core/usage_windows.py, core/usage_journal.py)
        "usage_add": (),
        "usage_fold": (),
        # a long job's parent and its chunks (worker/fanout.py): the last chunk wakes it
        "fanout_chunk_done": (),
        "fanout_wait": (),
        "delivery_enqueue": ("delivery_put",),
        "result_callback_swap": (),
        "dead_letter_put": (),
        "orphans_forget": (),
        "orphans_requeue": (),
        "orphans_rescore_zero": (),
        # a worker taking a due job (core/arq_compat.py start_claimed)
        "arq_claim": (),
        # the limiter (worker/limiter/core.py): each decision after the functions they share
        "limiter_acquire": ("limiter_common",),
        "limiter_release": ("limiter_common",),
        "limiter_rate_limited": ("limiter_common",),
        "limiter_release_tenant": ("limiter_common",),
        "limiter_release_ticket": ("limiter_common",),
        "limiter_admit": ("limiter_common",),
        "limiter_snapshot": ("limiter_common",),
        "limiter_next_free": ("limiter_common",),
        "unlimited_grant": (),
    }
)


#: The preludes whose scripts also form a function library (``in_library``): each of those
#: scripts starts by calling the prelude's ``bind(KEYS, ARGV)``, which sets its locals.
LIBRARY_PRELUDES: Final = frozenset({"limiter_common"})


#: The function of a prelude that each answer of the scripts after it passes through: it ends
#: the call (the limiter writes its state with one HSET there: limiter_common.lua, end_call).
CALL_ENDS: Final = MappingProxyType({"limiter_common": "end_call"})


def _body(name: str) -> str:
    """The text of script ``name`` as it runs after its preludes: its own, with its answer
    passed through a prelude's end (``CALL_ENDS``) where one has it."""
    text = source(name)
    for prelude in SCRIPTS[name]:
        if prelude in CALL_ENDS:
            return f"return {CALL_ENDS[prelude]}((function()\n{text}\nend)())"
    return text


@cache
def _library(prelude: str) -> LuaLibrary:
    members = [name for name, preludes in SCRIPTS.items() if preludes == (prelude,)]
    return LuaLibrary(f"mimoq_{prelude}", source(prelude), {n: _body(n) for n in members})


def in_library(name: str) -> LibraryFunction:
    """The script ``name`` of ``SCRIPTS`` as a function of its prelude's library (the one
    object per name, whoever asks)."""
    preludes = SCRIPTS.get(name)
    if preludes is None or len(preludes) != 1 or preludes[0] not in LIBRARY_PRELUDES:
        raise KeyError(f"{name!r} is not a script after one of {sorted(LIBRARY_PRELUDES)}")
    return _library(preludes[0]).functions[name]


@cache
def named(name: str) -> LuaScript:
    """The script ``name`` of ``SCRIPTS``, after its preludes: built and hashed once per
    process (one object per name, whoever asks)."""
    if name not in SCRIPTS:
        raise KeyError(f"{name!r} is not a script of mimoq.core.scripts.SCRIPTS")
    return LuaScript("\n".join([*(source(part) for part in SCRIPTS[name]), _body(name)]))
