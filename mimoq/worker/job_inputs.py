"""A job's audio input, wherever it lives, as the pipeline needs it.

Local paths and data URIs are checked in place (``mimoq.core.inputs``: inside the roots,
regular files only, in a thread). Object-store and https inputs are probed without a
download when only their size matters (is this one call or a split?), and otherwise
streamed into a private spool folder for the length of the call, then deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mimoq.core import dialect_constants as dc
from mimoq.core.errors import InvalidRequestError
from mimoq.core.inputs import input_roots, open_regular, ref_kind, ref_suffix
from mimoq.core.remote import describe, download, object_reader, open_object, probe
from mimoq.core.settings import Settings
from mimoq.core.sources import AudioInput, check_audio, inspect_audio
from mimoq.core.storage import Storage

_SNIFF_BYTES = 64 * 1024


def _mime(ref: str, param: str) -> str:
    mime = dc.EXTENSION_MIME.get(ref_suffix(ref))
    if mime is None:
        raise InvalidRequestError(f"{param}: use a .wav or .mp3 file", param=param)
    return mime


async def input_info(settings: Settings, storage: Storage, ref: str, *, param: str) -> AudioInput:
    """Type, size and duration of an input, checked; remote ones are not downloaded."""
    if ref_kind(ref) in ("local", "data"):
        roots = input_roots(settings)
        return await asyncio.to_thread(inspect_audio, ref, param=param, roots=roots)
    mime = _mime(ref, param)
    if ref_kind(ref) == "http":  # no ranged reads to count on: a private copy for the check
        async with spooled(settings, storage, ref, param=param) as audio:
            return dataclasses.replace(audio, path=None)
    size, head = await probe(ref, settings=settings, storage=storage, param=param)

    def opener() -> BinaryIO:
        # What the checks read beyond the head (an MP3's frames, a WAV libsndfile must
        # decode) comes in ranges, in this thread.
        return object_reader(ref, storage, param)

    return await asyncio.to_thread(
        check_audio, head, size, mime=mime, where=describe(ref), param=param, path=None,
        opener=opener,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def spooled(
    settings: Settings, storage: Storage, ref: str, *, param: str
) -> AsyncIterator[AudioInput]:
    """The input checked and, if remote, downloaded to a private file for the block's length."""
    if ref_kind(ref) in ("local", "data"):
        yield await input_info(settings, storage, ref, param=param)
        return
    mime = _mime(ref, param)
    with tempfile.TemporaryDirectory(prefix="mimoq-input-") as spool:
        dest = Path(spool) / f"input{ref_suffix(ref)}"
        await download(ref, dest, settings=settings, storage=storage, param=param)
        yield await asyncio.to_thread(_check_spooled, dest, mime, describe(ref), param)


def _check_spooled(path: Path, mime: str, where: str, param: str) -> AudioInput:
    with open_regular(path, param, shown=where) as local:
        head = local.file.read(_SNIFF_BYTES)

        def opener() -> BinaryIO:
            local.file.seek(0)
            return local.file

        return check_audio(
            head, local.size, mime=mime, where=where, param=param, path=path, opener=opener
        )


@dataclass(frozen=True)
class SplitSource:
    """What the splitter reads: a local file, or an object read in ranges (never whole)."""

    audio: AudioInput
    path: Path | None
    opener: Callable[[], contextlib.AbstractContextManager[BinaryIO]]


@contextlib.asynccontextmanager
async def split_source(
    settings: Settings, storage: Storage, ref: str, *, param: str, need_path: bool = False
) -> AsyncIterator[SplitSource]:
    """A long recording for the splitter. A WAV in an object store is read with ranged
    requests (memory flat, each byte read once); an MP3 (its splitter wants a path), audio to
    decode first (``need_path``) or an https input is downloaded to a spool file first."""
    if ref_kind(ref) == "object" and _mime(ref, param) == "audio/wav" and not need_path:
        audio = await input_info(settings, storage, ref, param=param)
        yield SplitSource(audio, None, lambda: open_object(ref, storage, param))
        return
    async with spooled(settings, storage, ref, param=param) as audio:
        path = audio.path
        if path is None:
            yield SplitSource(audio, None, _no_file)
            return
        checked = path

        @contextlib.contextmanager
        def reopen() -> Iterator[BinaryIO]:
            with open_regular(checked, param) as local:
                yield local.file

        yield SplitSource(audio, checked, reopen)


def _no_file() -> contextlib.AbstractContextManager[BinaryIO]:
    raise AssertionError("a data URI has no file to open")
