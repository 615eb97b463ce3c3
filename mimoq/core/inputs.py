"""Where a job's audio may be read from, and reading local files without being tricked.

A job names its audio (a transcription's ``file``, a voice-clone ``voice``) as a data URI,
an object-store URL (``s3://``, ``gs://``, ``az://``), an ``https://`` URL, or a local
path / ``file://`` URI. Jobs come from foreign producers too, so a local reference is a
request to read a file *on the worker's host*: it is honoured only inside the configured
input roots (``MIMOQ_INPUT_ROOTS``, default the data directory), after symlinks and ``..``
are resolved, and only for regular files — a FIFO or a device would block the reader or
stream forever. Every check here is blocking I/O: callers on the event loop run it in a
thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Literal
from urllib.parse import unquote, urlsplit

from mimoq.core.errors import InvalidRequestError
from mimoq.core.settings import Settings

RefKind = Literal["data", "local", "object", "http"]
#: Object-store schemes a reference may use (``memory://`` only inside the own storage).
OBJECT_SCHEMES: Final = frozenset({"s3", "gs", "az", "memory"})
HTTP_SCHEMES: Final = frozenset({"http", "https"})
_SCHEME: Final = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.I)
# O_NONBLOCK: opening a FIFO for reading must not wait for a writer (it would freeze the
# worker); O_NOFOLLOW: the checked, resolved path must not have become a symlink since.
_OPEN_FLAGS: Final = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


def ref_kind(ref: str) -> RefKind:
    """What kind of reference this is (syntax only, no I/O)."""
    if ref.startswith("data:"):
        return "data"
    match = _SCHEME.match(ref)
    scheme = match.group(1).lower() if match else "file"
    if scheme in OBJECT_SCHEMES:
        return "object"
    if scheme in HTTP_SCHEMES:
        return "http"
    return "local"


def ref_suffix(ref: str) -> str:
    """The file extension a reference names (lower case, with its dot), ignoring any query."""
    path = urlsplit(ref).path if _SCHEME.match(ref) else ref
    name = path.rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""


def input_roots(settings: Settings) -> tuple[Path, ...]:
    """The folders local inputs may come from, fully resolved.

    ``MIMOQ_INPUT_ROOTS`` (default: the data directory), plus the local storage folder when
    storage is local: the worker's own files (staged inputs, a long recording's chunks).
    """
    raw = [part.strip() for part in settings.storage.input_roots.split(os.pathsep) if part.strip()]
    folders = [Path(p).expanduser() for p in raw] or [settings.storage.data_dir.expanduser()]
    storage = settings.storage.location()
    if storage.lower().startswith("file://"):
        folders.append(local_path(storage, "MIMOQ_STORAGE_URL"))
    resolved = [Path(os.path.realpath(folder)) for folder in folders]
    return tuple(dict.fromkeys(resolved))


def local_path(ref: str, param: str) -> Path:
    """The path a local reference or ``file://`` URI names (no I/O)."""
    if ref.lower().startswith("file://"):
        parsed = urlsplit(ref)
        if parsed.netloc not in ("", "localhost"):
            raise InvalidRequestError(
                f"{param}: file URI host {parsed.netloc!r} is not this machine: use a path, "
                "or an s3:// or https:// URL the workers can reach",
                param=param,
            )
        return Path(unquote(parsed.path))
    if _SCHEME.match(ref):
        raise InvalidRequestError(
            f"{param}: {ref.split('://', 1)[0]}:// is not a supported location: use a path, "
            "s3://, gs://, az://, https:// or a data: URI",
            param=param,
        )
    return Path(ref).expanduser()


def confine(ref: str, roots: Sequence[Path], param: str) -> Path:
    """The resolved path of a local reference, refused unless it lies inside one of ``roots``.

    Symlinks and ``..`` are resolved first, so a link inside a root pointing out of it is
    refused like the path it points to. A relative path is taken relative to the first root
    (a foreign producer's working directory means nothing on the worker). The message names
    the path as given, never what a link resolves to.
    """
    given = local_path(ref, param)
    path = given if given.is_absolute() else roots[0] / given
    real = Path(os.path.realpath(path))
    if not any(real.is_relative_to(root) for root in roots):
        where = ", ".join(str(r) for r in roots)
        raise InvalidRequestError(
            f"{param}: {given} is outside the folders local inputs may come from ({where}, "
            "set by MIMOQ_INPUT_ROOTS): move the file under one of them, let `mimoq "
            "transcribe`/`mimoq batch` upload it, or name it by an s3:// or https:// URL",
            param=param,
        )
    return real


@dataclass
class LocalInput:
    """An open, checked regular file: close it (or use it as a context manager)."""

    path: Path  # resolved
    size: int
    file: BinaryIO

    def __enter__(self) -> LocalInput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()


def open_regular(path: Path, param: str, *, shown: object = None) -> LocalInput:
    """Open ``path`` for reading only if it is a regular file (blocking: call in a thread)."""
    label = shown if shown is not None else path
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise InvalidRequestError(f"{param}: {label} does not exist", param=param) from None
    except OSError as exc:
        raise InvalidRequestError(
            f"{param}: cannot read {label} ({exc.strerror})", param=param
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidRequestError(
                f"{param}: {label} is not a regular file (a FIFO, device or folder cannot be "
                "an input)",
                param=param,
            )
        os.set_blocking(fd, True)  # a regular file: ordinary buffered reads from here
        return LocalInput(path=path, size=info.st_size, file=os.fdopen(fd, "rb"))
    except BaseException:
        os.close(fd)
        raise


def open_local(ref: str, roots: Sequence[Path], param: str) -> LocalInput:
    """Confine then open a local reference (blocking: call in a thread)."""
    return open_regular(confine(ref, roots, param), param, shown=local_path(ref, param))
