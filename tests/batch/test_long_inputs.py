"""Inputs longer than one MiMo call, end to end: split, chunk jobs in parallel, stitched in order.

A real redis-server, a real arq worker, the simulator as MiMo. The simulator hears a WAV
without a text chunk as ``[audio 215.00s sha1:...]``: the test recording puts a pause where
each chunk should end and makes every chunk a different length, so the stitched transcript
spells out which chunk came where.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.core.audio import WavFormat, parse_wav_header, wav_header
from mimoq.core.jobs import JobResult
from mimoq.core.settings import Settings
from mimoq.core.splitting.plan import child_id
from mimoq.core.splitting.split_limits import max_chunk_bytes
from mimoq.producer.client import Producer
from mimoq.sim.sim_server import RunningSim
from mimoq.worker.arq_worker import MimoqWorker
from tests.batch.conftest import add_fault, sim_stats
from tests.conftest import RedisServer
from tests.e2e.conftest import e2e_settings
from tests.support.polling import eventually

pytestmark = [pytest.mark.redis, pytest.mark.slow]
FMT = WavFormat(16_000, 1, 16)
#: Chunk lengths the recording is built for: each a different length, each ending in a pause.
CHUNKS_S = [215.0, 218.0, 221.0, 224.0, 227.0, 95.0]  # 20 minutes in all
PAUSE_S = 1.0


@pytest.fixture
def settings(redis_server: RedisServer, sim: RunningSim, tmp_path: Path) -> Settings:
    return e2e_settings(
        redis_server, sim, tmp_path / "data", limiter={"enabled": False}, retry={"max_tries": 3}
    )


def twenty_minutes(path: Path) -> Path:
    """Tone throughout, but for a 1 s pause centred on every planned chunk end."""
    rate = FMT.sample_rate
    total = int(sum(CHUNKS_S) * rate)
    ends = np.cumsum(CHUNKS_S)[:-1]
    with open(path, "wb") as f:
        f.write(wav_header(FMT, total * 2))
        for start in range(0, total, 60 * rate):  # a minute at a time: the test stays small too
            t = np.arange(start, min(start + 60 * rate, total)) / rate
            block = 0.3 * np.sin(2 * np.pi * 330 * t)
            for end in ends:
                block[np.abs(t - end) < PAUSE_S / 2] = 0.0
            f.write((block * 32767).astype("<i2").tobytes())
    return path


def heard_durations(transcript: str) -> list[float]:
    return [float(s) for s in re.findall(r"\[audio (\d+\.\d+)s sha1:[0-9a-f]{8}\]", transcript)]


async def _gone(redis: ArqRedis, key: str) -> bool:
    return not await redis.exists(key)


async def run(producer: Producer, job: dict[str, object], timeout_s: float = 120) -> JobResult:
    enqueued = await producer.enqueue(job)
    return await producer.wait(enqueued.job_id, timeout_s=timeout_s)


async def test_twenty_minutes_are_transcribed_in_six_chunks_stitched_in_order(
    producer: Producer,
    worker: MimoqWorker,
    sim: RunningSim,
    redis: ArqRedis,
    tmp_path: Path,
    settings: Settings,
) -> None:
    per_chunk_s = (max_chunk_bytes("audio/wav") - 44) / FMT.byte_rate
    assert max(CHUNKS_S) < per_chunk_s < max(CHUNKS_S) + 20  # every pause is in a search region
    recording = twenty_minutes(tmp_path / "lecture.wav")
    result = await run(producer, {"kind": "transcription", "id": "lecture", "file": str(recording)})
    assert result.status == "succeeded", result.error
    assert result.text is not None
    heard = heard_durations(result.text)
    assert heard == pytest.approx(CHUNKS_S, abs=0.05)  # in order: each chunk is its own length
    assert sim_stats(sim)["requests"]["mimo-v2.5-asr"] == 6
    assert result.usage is not None and result.usage["seconds"] == pytest.approx(1200, abs=0.1)
    # the chunk jobs were ordinary jobs with their own results; their files are gone
    children = [await producer.result(child_id("lecture", i)) for i in range(6)]
    assert all(c is not None and c.status == "succeeded" for c in children)
    assert not (settings.storage.data_dir / "chunks" / "lecture").exists()
    assert result.output is not None and Path(result.output.path).read_text().startswith(
        '{"text":"[audio 215.00s'
    )


async def test_a_chunk_that_fails_once_is_retried_alone(
    producer: Producer, worker: MimoqWorker, sim: RunningSim, tmp_path: Path
) -> None:
    add_fault(sim, kind="status", status=503, times=1, match="mimo-v2.5-asr")
    result = await run(
        producer, {"kind": "transcription", "file": str(twenty_minutes(tmp_path / "a.wav"))}
    )
    assert result.status == "succeeded", result.error
    assert sim_stats(sim)["requests"]["mimo-v2.5-asr"] == 7  # six chunks, one of them twice
    assert heard_durations(result.text or "") == pytest.approx(CHUNKS_S, abs=0.05)


async def test_a_chunk_that_gives_up_fails_the_parent_by_name_and_only_it_is_redone(
    producer: Producer, worker: MimoqWorker, sim: RunningSim, redis: ArqRedis, tmp_path: Path
) -> None:
    recording = twenty_minutes(tmp_path / "b.wav")
    add_fault(sim, kind="status", status=400, times=1, match="mimo-v2.5-asr", message="bad chunk")
    failed = await run(producer, {"kind": "transcription", "id": "b", "file": str(recording)})
    assert failed.status == "failed"
    message = str((failed.error or {})["message"])
    assert re.match(
        r"chunk [1-6]/6 \(\d+:\d\d\.\d-\d+:\d\d\.\d\) failed: invalid_request_error: ", message
    ), message
    assert sim_stats(sim)["requests"]["mimo-v2.5-asr"] == 6

    # arq deletes the finished job's key just after the task returns, i.e. after the result
    # was written: until then enqueue.lua would (rightly) treat "b" as already queued.
    await eventually(lambda: _gone(redis, wire.job_key("b")), timeout_s=30, what="arq's job key")
    await redis.delete(wire.result_key("b"))  # what `mimoq batch` does before a retry
    again = await run(producer, {"kind": "transcription", "id": "b", "file": str(recording)})
    assert again.status == "succeeded", again.error
    assert sim_stats(sim)["requests"]["mimo-v2.5-asr"] == 7  # the five good chunks were kept
    assert heard_durations(again.text or "") == pytest.approx(CHUNKS_S, abs=0.05)


LONG_TEXT = " ".join(
    f"This is sentence number {i}, which is about as long as a sentence gets." for i in range(120)
)


@pytest.mark.parametrize("fmt", ["wav", "pcm"])
async def test_a_long_text_becomes_one_audio_file_the_sum_of_its_parts(
    producer: Producer, worker: MimoqWorker, sim: RunningSim, fmt: str
) -> None:
    assert len(LONG_TEXT) > 3 * 2500
    result = await run(
        producer,
        {
            "kind": "speech",
            "id": f"book-{fmt}",
            "input": LONG_TEXT,
            "voice": "Mia",
            "response_format": fmt,
        },
    )
    assert result.status == "succeeded", result.error
    n = sim_stats(sim)["requests"]["mimo-v2.5-tts"]
    assert n == 4
    parts = [await producer.result(child_id(f"book-{fmt}", i)) for i in range(n)]
    durations = [p.output.duration_s for p in parts if p is not None and p.output is not None]  # type: ignore[union-attr]
    assert result.output is not None and result.output.format == fmt
    assert result.output.duration_s == pytest.approx(sum(durations), abs=0.002)
    data = Path(result.output.path).read_bytes()
    if fmt == "wav":
        parsed = parse_wav_header(data)
        assert parsed is not None
        samples = parsed[2]
        assert parsed[0] == WavFormat(24_000, 1, 16) and samples == len(data) - 44
    else:
        samples = len(data)
    assert samples == round(sum(durations) * 24_000) * 2
    assert result.usage is not None and result.usage["total_tokens"] == sum(
        p.usage["total_tokens"]
        for p in parts
        if p is not None and p.usage  # type: ignore[index]
    )


async def test_texts_past_the_upper_bound_are_refused_at_the_edge(producer: Producer) -> None:
    from mimoq.core.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="mimoq splits texts of up to 200,000"):
        await producer.enqueue({"kind": "speech", "input": "word " * 40_001})


async def test_inline_audio_past_one_call_is_split_too(
    producer: Producer, worker: MimoqWorker, sim: RunningSim
) -> None:
    import pybase64

    seconds = 300.0  # 9.6 MB of 16 kHz mono: 12.8 M characters of base64
    t = np.arange(int(seconds * FMT.sample_rate)) / FMT.sample_rate
    samples = (0.3 * np.sin(2 * np.pi * 330 * t) * 32767).astype("<i2").tobytes()
    uri = (
        "data:audio/wav;base64,"
        + pybase64.b64encode(wav_header(FMT, len(samples)) + samples).decode()
    )
    result = await run(producer, {"kind": "transcription", "file": uri})
    assert result.status == "succeeded", result.error
    heard = heard_durations(result.text or "")
    assert len(heard) == 2 and sum(heard) == pytest.approx(seconds, abs=0.05)


async def test_a_long_mp3_is_split_at_frame_boundaries(
    producer: Producer, worker: MimoqWorker, sim: RunningSim, tmp_path: Path
) -> None:
    import soundfile

    from tests.batch.helpers import tones

    path = tmp_path / "talk.mp3"
    # Four minutes: 10 s encoded once and its frames repeated 24 times. MP3 frames stand
    # alone, so the copies make one valid stream; encoding all four minutes took ~10 s of
    # the suite's CPU.
    ten_s = tmp_path / "ten.mp3"
    stereo = np.repeat(tones(44_100, [(9.5, 0.5)])[:, None], 2, axis=1)
    soundfile.write(
        ten_s, stereo, 44_100, format="MP3", bitrate_mode="CONSTANT", compression_level=0
    )
    path.write_bytes(ten_s.read_bytes() * 24)
    assert path.stat().st_size > 7_500_000  # 320 kbit/s: past one call
    result = await run(producer, {"kind": "transcription", "file": str(path)})
    assert result.status == "succeeded", result.error
    # The simulator times MP3 by size at 128 kbit/s: the chunks' bytes add up to the file's.
    heard = heard_durations(result.text or "")
    assert len(heard) == 2
    assert sum(heard) * 128_000 / 8 == pytest.approx(path.stat().st_size, rel=0.001)
