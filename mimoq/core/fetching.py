"""Downloading a stored output by its URL, wherever it is (``mimoq fetch``, ``--out``).

Streams to a temporary file beside the destination and renames it into place, so a
half-downloaded file never sits under the requested name.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

import obstore

from mimoq.core.errors import InvalidRequestError
from mimoq.core.inputs import open_regular, ref_kind
from mimoq.core.remote import object_location
from mimoq.core.storage import Storage


def download_output(url: str, dest: Path, storage: Storage | None) -> int:
    """Copy the object at ``url`` (``file://`` or an object store) to ``dest``; its size.

    Blocking (it streams the whole object): call it in a thread from async code.
    """
    dest = dest.expanduser()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        with open(tmp, "wb") as out:
            if url.lower().startswith("file://"):
                path = Path(unquote(urlsplit(url).path))
                if not path.is_file():
                    raise FileNotFoundError(url)
                with open_regular(path, "output") as local:
                    shutil.copyfileobj(local.file, out, 1 << 20)
            elif ref_kind(url) == "object":
                store, key = object_location(url, storage, "output")
                for chunk in obstore.get(store, key).stream(min_chunk_size=1 << 20):
                    out.write(chunk)
            else:
                raise InvalidRequestError(f"output: cannot download {url.split('://')[0]}:// URLs")
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest.stat().st_size
