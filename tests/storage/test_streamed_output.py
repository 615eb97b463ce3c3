"""TTS audio streamed into an object store: byte-identical to the local path, never partial.

obstore's in-memory store stands in for a bucket; the audio goes through the same
forward-only sink and multipart writer as against S3.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import obstore
import pytest

from mimoq.core.audio import MIMO_PCM, AudioFormatError, wav_header
from mimoq.core.audio_stream import ForwardAudioSink, TruncatedAudioError
from mimoq.core.errors import RetryableError, UpstreamResponseError, UpstreamUnavailable
from mimoq.core.objstore import ObjectStorage
from mimoq.core.storage import LocalStorage, StreamWriter
from mimoq.worker.outputs import STAGING_PREFIX, StorageUnavailableError, write_speech

SAMPLES = bytes(range(256)) * 400  # 102,400 bytes: 51,200 frames of s16 mono


def _wav(samples: bytes, *, declared: int | None = None, riff: int | None = None) -> bytes:
    header = bytearray(wav_header(MIMO_PCM, 0))
    struct.pack_into("<I", header, 40, len(samples) if declared is None else declared)
    struct.pack_into("<I", header, 4, 36 + len(samples))
    if riff is not None:
        struct.pack_into("<I", header, 4, riff)
    return bytes(header) + samples


def _speaker(
    body: bytes, piece: int = 1000, usage: dict[str, int] | None = None
) -> AsyncIterator[bytes]:
    """The audio a MiMo call yields, ``piece`` bytes at a time; ``usage`` filled once exhausted."""

    async def speak() -> AsyncIterator[bytes]:
        for start in range(0, len(body), piece):
            yield body[start : start + piece]
        if usage is not None:
            usage["total_tokens"] = 7

    return speak()


def _memory() -> ObjectStorage:
    return ObjectStorage(f"memory://{uuid.uuid4().hex}/out", part_bytes=5 << 20)


def _read(storage: ObjectStorage, key: str) -> bytes:
    return bytes(obstore.get(storage.store, storage.path(key)).bytes())


@pytest.mark.parametrize(
    ("body", "output"),
    [
        (_wav(SAMPLES), "wav"),  # a complete WAV, as MiMo sends
        (_wav(SAMPLES), "pcm"),
        (_wav(SAMPLES, declared=0), "wav"),  # placeholder sizes: staged, then rewritten
        (_wav(SAMPLES, declared=0xFFFFFFFF), "pcm"),
        (_wav(SAMPLES + b"\x01"), "pcm"),  # a partial frame at the end is dropped
        (_wav(SAMPLES + b"\x01", declared=0), "wav"),
        (_wav(SAMPLES, riff=12345), "wav"),  # a RIFF size that disagrees
    ],
)
async def test_streamed_output_matches_the_local_file(
    tmp_path: Path, body: bytes, output: str
) -> None:
    local = LocalStorage(tmp_path)
    remote = _memory()
    usage: dict[str, int] = {}
    local_info = await write_speech(local, "speech/a.wav", output, _speaker(body))  # type: ignore[arg-type]
    remote_info = await write_speech(remote, "speech/a.wav", output, _speaker(body, 777, usage))  # type: ignore[arg-type]
    assert usage == {"total_tokens": 7}  # the audio was read to its end
    expected = (tmp_path / "speech/a.wav").read_bytes()
    assert _read(remote, "speech/a.wav") == expected
    assert remote_info == local_info
    staged = list(obstore.list(remote.store, prefix=f"out/{STAGING_PREFIX}").collect())
    assert staged == []  # the staging copy of a rewritten WAV is gone


async def test_a_failure_mid_stream_leaves_no_object() -> None:
    remote = _memory()
    body = _wav(SAMPLES * 200)  # 20 MB: several parts already uploaded when it fails

    async def speak() -> AsyncIterator[bytes]:
        for start in range(0, len(body) - 1000, 64 * 1024):
            yield body[start : start + 64 * 1024]
        raise UpstreamUnavailable("connection to MiMo failed (ReadError)")

    with pytest.raises(UpstreamUnavailable):
        await write_speech(remote, "speech/b.wav", "wav", speak())
    assert not remote.exists("speech/b.wav")
    assert list(obstore.list(remote.store).collect()) == []


async def test_a_cancelled_job_leaves_no_object() -> None:
    remote = _memory()
    started = asyncio.Event()

    async def speak() -> AsyncIterator[bytes]:
        yield _wav(SAMPLES * 100)
        started.set()  # the first piece is written: the next one is asked for
        await asyncio.Event().wait()  # a MiMo call that never ends: the job is cancelled
        yield b""

    task = asyncio.create_task(write_speech(remote, "speech/c.wav", "wav", speak()))
    await asyncio.wait_for(started.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not remote.exists("speech/c.wav")


async def test_audio_shorter_than_its_header_is_retried_not_stored() -> None:
    remote = _memory()
    body = _wav(SAMPLES, declared=len(SAMPLES) * 2)
    with pytest.raises(UpstreamUnavailable, match="cut short"):
        await write_speech(remote, "speech/d.wav", "wav", _speaker(body))
    assert not remote.exists("speech/d.wav")


async def test_not_a_wav_is_an_upstream_error() -> None:
    with pytest.raises(UpstreamResponseError, match="not a usable WAV"):
        await write_speech(_memory(), "speech/e.wav", "wav", _speaker(b"OggS" + b"\x00" * 100))


def test_forward_sink_never_holds_the_audio() -> None:
    sink = ForwardAudioSink(output="wav")
    held = 0
    body = _wav(SAMPLES * 50)
    for start in range(0, len(body), 4096):
        sink.write(body[start : start + 4096])
        held = max(held, sink.pending_bytes)
        sink.take()
    assert held <= 4096 + 44
    assert sink.finish().data_bytes == len(SAMPLES) * 50


def test_forward_sink_errors() -> None:
    with pytest.raises(AudioFormatError, match="empty"):
        ForwardAudioSink(output="pcm").finish()
    sink = ForwardAudioSink(output="wav")
    sink.write(_wav(SAMPLES, declared=len(SAMPLES) + 2)[:-10])
    with pytest.raises(TruncatedAudioError):
        sink.finish()


class _StoreFailsTheUpload(ObjectStorage):
    """The store answers 500 to the upload's completion, after obstore's own retries: its
    streaming writer raises a plain OSError, not one of obstore's exceptions."""

    @contextlib.asynccontextmanager
    async def stream(self, key: str) -> AsyncIterator[StreamWriter]:
        async with super().stream(key) as writer:
            yield writer
            raise OSError("Generic S3 error: Error performing PUT ... 500 Internal Server Error")


async def test_a_store_that_fails_the_upload_is_retried_not_an_internal_error() -> None:
    remote = _StoreFailsTheUpload(f"memory://{uuid.uuid4().hex}/out", part_bytes=5 << 20)
    with pytest.raises(StorageUnavailableError, match=r"speech/f\.wav") as failed:
        await write_speech(remote, "speech/f.wav", "wav", _speaker(_wav(SAMPLES)))
    assert isinstance(failed.value, RetryableError)  # retried with backoff, not failed
    assert not remote.exists("speech/f.wav")
