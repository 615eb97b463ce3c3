"""Local input files copied into storage so that any worker, on any host, can read them.

A producer (``mimoq transcribe FILE``, ``mimoq batch DIR``) names files on *its* disk; a
worker may run elsewhere, and reads local paths only inside its input roots. So the file
is put into storage under ``inputs/<sha256><ext>``: content-addressed, so a re-run (or the
same recording under another name) uploads nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Final

from mimoq.core.inputs import open_regular
from mimoq.core.storage import Storage

INPUTS_PREFIX: Final = "inputs"
_READ_BYTES: Final = 1 << 20


def staged_key(digest: str, suffix: str) -> str:
    """The storage key of an input with this SHA-256 and extension."""
    return f"{INPUTS_PREFIX}/{digest}{suffix.lower()}"


def stage_file(storage: Storage, path: Path, param: str) -> str:
    """Copy a local regular file into storage (once); return the reference a job carries.

    Blocking (it hashes the whole file): call it in a thread.
    """
    with open_regular(path, param) as local:
        digest = hashlib.sha256()
        while block := local.file.read(_READ_BYTES):
            digest.update(block)
        key = staged_key(digest.hexdigest(), path.suffix)
        if not storage.exists(key):
            local.file.seek(0)
            storage.put_file(key, local.file)
    return storage.locate(key)
