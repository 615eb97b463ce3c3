"""Fetching a batch request's audio from an ``http(s)://`` URL, safely, into the uploads.

The same SSRF defence as callbacks (``mimoq.core.ssrf``): the host is resolved once, every
address checked against ``MIMOQ_CALLBACK_ALLOW_NETWORKS`` and the public-address rule, and
the request pinned to the checked address; no redirects, no environment proxy, a size
limit counted as the body streams, and one overall deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path, PurePosixPath
from typing import Final
from urllib.parse import urlsplit

import httpx

from mimoq.core import dialect_constants as dc
from mimoq.core.errors import InvalidRequestError, RetryableError
from mimoq.core.settings import Settings
from mimoq.core.ssrf import CallbackUrlRefusedError, redact_url, resolve_checked
from mimoq.http.content import upload_key, upload_path

FETCH_TIMEOUT_S: Final = 300.0
_CHUNK: Final = 64 * 1024


def is_remote(ref: object) -> bool:
    return isinstance(ref, str) and ref.lower().startswith(("http://", "https://"))


def _suffix(url: str, content_type: str | None) -> str:
    suffix = PurePosixPath(urlsplit(url).path).suffix.lower()
    if suffix in dc.EXTENSION_MIME:
        return suffix
    mime = dc.MIME_ALIASES.get((content_type or "").split(";")[0].strip().lower())
    return ".mp3" if mime == "audio/mpeg" else ".wav"  # the content check decides for sure


def _refused(url: str, why: str) -> InvalidRequestError:
    return InvalidRequestError(f"file: cannot fetch {redact_url(url)}: {why}", param="file")


async def fetch_audio(settings: Settings, url: str, job_id: str) -> Path:
    """Download ``url`` to the job's upload path; ``InvalidRequestError`` naming ``file``."""
    partial = upload_path(settings, upload_key(job_id, ".part"))
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        async with asyncio.timeout(FETCH_TIMEOUT_S):
            try:
                target = await resolve_checked(url, settings)
            except CallbackUrlRefusedError as exc:
                # The policy is the callbacks' (one allow-list); the message names this field.
                raise _refused(url, exc.message.replace("callback.url", "the URL")) from None
            except RetryableError as exc:
                raise _refused(url, exc.message) from None
            async with httpx.AsyncClient(
                timeout=httpx.Timeout(60.0), follow_redirects=False, trust_env=False,
                limits=httpx.Limits(max_keepalive_connections=0),
            ) as client:  # fmt: skip
                request = client.build_request(
                    "GET", target.connect_url, headers={"host": target.host_header},
                    extensions=target.extensions(),
                )  # fmt: skip
                response = await client.send(request, stream=True)
                try:
                    if response.status_code != 200:
                        raise _refused(url, f"it answered {response.status_code}")
                    size = 0
                    with partial.open("wb") as out:
                        async for chunk in response.aiter_bytes(_CHUNK):
                            size += len(chunk)
                            if size > settings.http.max_upload_bytes:
                                raise _refused(
                                    url,
                                    f"it is larger than {settings.http.max_upload_bytes:,} bytes",
                                )
                            out.write(chunk)
                    suffix = _suffix(url, response.headers.get("content-type"))
                finally:
                    await response.aclose()
    except TimeoutError:
        partial.unlink(missing_ok=True)
        raise _refused(url, f"no complete answer within {FETCH_TIMEOUT_S:g} s") from None
    except httpx.HTTPError as exc:
        partial.unlink(missing_ok=True)
        raise _refused(url, type(exc).__name__) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    final = upload_path(settings, upload_key(job_id, suffix))
    os.replace(partial, final)
    return final
