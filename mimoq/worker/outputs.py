"""Writing a job's output to storage: TTS audio streamed, links for the result record.

On local storage TTS audio goes through :class:`~mimoq.core.audio.AudioSink` into a
temporary file (seek back, patch, fsync, rename). On an object store it is streamed into a
multipart upload as it is decoded — no local file, one part in memory — with the header
right the first time (:mod:`mimoq.core.audio_stream`); a WAV with placeholder sizes is
staged under ``staging/`` and rewritten once behind its true header.

:func:`write_speech` consumes the decoded pieces the MiMo client yields
(:meth:`~mimoq.worker.mimo_client.MimoClient.speech`), each written before the next chunk
is read.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable
from typing import Final

from obstore.exceptions import BaseError as ObjectStoreError

from mimoq.core.audio import AudioContainer, AudioFormatError, AudioInfo, AudioSink
from mimoq.core.audio_stream import ForwardAudioSink
from mimoq.core.errors import RetryableError
from mimoq.core.settings import Settings
from mimoq.core.storage import Storage, StreamWriter
from mimoq.worker.upstream_errors import as_mimoq_error

STAGING_PREFIX: Final = "staging"


class StorageUnavailableError(RetryableError):
    """The object store failed a write (now); the job is retried."""

    error_type = "storage_unavailable_error"


async def write_speech(
    storage: Storage, key: str, output: AudioContainer, audio: AsyncIterable[bytes]
) -> AudioInfo:
    """Write the decoded audio pieces to ``key`` as they arrive; returns what was written.

    The caller holds the storage span, around the MiMo call feeding ``audio``.
    """
    try:
        if storage.is_local():
            return await _to_file(storage, key, output, audio)
        return await _streamed(storage, key, output, audio)
    except AudioFormatError as exc:  # MiMo's audio, cut short (TruncatedAudioError) or unusable
        raise as_mimoq_error(exc) from None
    except TimeoutError:
        raise  # a timeout is the job's own (arq's job timeout), not the store's
    except (ObjectStoreError, OSError) as exc:
        # obstore's streaming writer reports a failed part or completion (a 500 from the
        # store, after its own retries) as a plain OSError, as a local disk does ENOSPC: the
        # store failed now, and the job is retried, not failed as an internal error.
        raise StorageUnavailableError(
            f"writing {key} to storage failed ({type(exc).__name__})"
        ) from None


async def _to_file(
    storage: Storage, key: str, output: AudioContainer, audio: AsyncIterable[bytes]
) -> AudioInfo:
    with storage.open_atomic(key) as f:
        sink = AudioSink(f, source="wav", output=output)
        async for piece in audio:
            sink.write(piece)
        return sink.finish()


async def _streamed(
    storage: Storage, key: str, output: AudioContainer, audio: AsyncIterable[bytes]
) -> AudioInfo:
    sink = ForwardAudioSink(output=output)
    target = key
    async with contextlib.AsyncExitStack() as stack:
        writer: StreamWriter | None = None

        async def drain() -> None:
            nonlocal writer, target
            if writer is None:
                if not sink.format_known:
                    return  # the header is still arriving: nothing to upload yet
                # Opened only now: whether the header needs a second pass is known.
                target = f"{STAGING_PREFIX}/{key}" if sink.needs_rewrite else key
                writer = await stack.enter_async_context(storage.stream(target))
            if sink.pending_bytes:
                await writer.write(sink.take())

        async for piece in audio:
            sink.write(piece)
            await drain()  # uploaded before the next piece: memory stays at a chunk and a part
        await drain()
        # Raising here leaves the block with an error: the upload is aborted, not completed.
        info = sink.finish()
    if target != key:
        await storage.rewrite(
            target, key, sink.final_header(info), sink.data_offset, info.data_bytes
        )
    return info


async def links(storage: Storage, settings: Settings, key: str) -> dict[str, str | None]:
    """The ``url`` (and, when configured, ``presigned_url``) of an output for its record."""
    presigned = None
    if settings.storage.presign_ttl_s:
        presigned = await storage.presign(key, settings.storage.presign_ttl_s)
    return {"url": storage.url(key), "presigned_url": presigned}
