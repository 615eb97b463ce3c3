"""Segments with timestamps, compacted silence and telephone audio, end to end.

A real redis-server, a real arq worker, the simulator as MiMo, recordings spoken by
espeak-ng with pauses of known length. The simulator hears a WAV without a text chunk as
``[audio 2.34s sha1:...]``, so each segment's transcript says how much audio was uploaded.
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
from pathlib import Path

import pytest
from arq.connections import ArqRedis

from mimoq.core import wire
from mimoq.core.errors import InvalidRequestError
from mimoq.core.jobs import JobResult
from mimoq.core.settings import Settings
from mimoq.producer.client import Producer
from mimoq.sim.sim_server import RunningSim
from mimoq.worker.arq_worker import MimoqWorker
from tests.batch.conftest import batch_env, sim_stats
from tests.conftest import RedisServer
from tests.e2e.conftest import e2e_settings
from tests.support.cli import mimoq
from tests.support.speech import SENTENCES, conversation, lame, need, sox

pytestmark = [pytest.mark.redis, pytest.mark.slow]
PAUSES_S = (0.6, 2.5, 1.2, 4.0, 0.8, 3.0, 1.5, 0.5, 2.0, 1.0)


@pytest.fixture
def settings(redis_server: RedisServer, sim: RunningSim, tmp_path: Path) -> Settings:
    return e2e_settings(
        redis_server,
        sim,
        tmp_path / "data",
        limiter={"enabled": False},
        retry={"max_tries": 3},
        worker={"concurrency": 8},
    )


@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[float, float]]]:
    need("espeak-ng", "sox")
    made = conversation(SENTENCES, PAUSES_S)
    path = made.write(tmp_path_factory.mktemp("talk") / "support call.wav", subtype="PCM_16")
    return path, made.truth


@pytest.fixture
def talk(
    spoken: tuple[Path, list[tuple[float, float]]], tmp_path: Path
) -> tuple[Path, list[tuple[float, float]]]:
    """The recording, copied inside this test's input root (the worker reads only there)."""
    path, truth = spoken
    copy = tmp_path / path.name
    copy.write_bytes(path.read_bytes())
    return copy, truth


async def run(producer: Producer, job: dict[str, object], timeout_s: float = 120) -> JobResult:
    enqueued = await producer.enqueue(job)
    return await producer.wait(enqueued.job_id, timeout_s=timeout_s)


def uploaded_s(text: str) -> float:
    return sum(float(s) for s in re.findall(r"\[audio (\d+\.\d+)s sha1:", text))


async def test_segments_carry_the_times_of_each_sentence(
    producer: Producer, worker: MimoqWorker, talk: tuple[Path, list[tuple[float, float]]]
) -> None:
    path, truth = talk
    result = await run(
        producer,
        {"kind": "transcription", "file": str(path), "timestamps": "segment", "output": "t.json"},
    )
    assert result.status == "succeeded", result.error
    segments = result.segments or []
    # Every pause here is >= 0.5 s (the default cut is 0.4 s): one segment per sentence.
    assert len(segments) == len(SENTENCES)
    errors = [
        abs(x - y) for s, (a, b) in zip(segments, truth, strict=True) for x, y in ((s.start, a), (s.end, b))
    ]  # fmt: skip
    assert statistics.median(errors) < 0.1 and max(errors) < 0.3, errors
    assert all(s.end - s.start <= 30 for s in segments)
    # Each piece uploads its speech with a little padding, never the pauses between them.
    assert all(s.text.startswith("[audio ") for s in segments)
    assert result.output is not None
    written = json.loads(Path(result.output.path).read_text())
    assert [s["start"] for s in written["segments"]] == [s.start for s in segments]
    assert written["text"] == result.text


async def test_a_recording_with_no_speech_costs_no_call(
    producer: Producer, worker: MimoqWorker, sim: RunningSim, tmp_path: Path
) -> None:
    hiss = conversation([], [1.0], lead_s=20.0, noise_db=-60).write(tmp_path / "empty.wav")
    result = await run(
        producer, {"kind": "transcription", "file": str(hiss), "timestamps": "segment"}
    )
    assert result.status == "succeeded", result.error
    assert (result.text, result.segments) == ("", [])
    assert sim_stats(sim)["requests"].get("mimo-v2.5-asr", 0) == 0


async def test_srt_and_vtt_come_from_segments(
    producer: Producer, worker: MimoqWorker, talk: tuple[Path, list[tuple[float, float]]]
) -> None:
    path, _ = talk
    srt = await run(
        producer,
        {"kind": "transcription", "file": str(path), "timestamps": "segment",
         "response_format": "srt"},
    )  # fmt: skip
    assert srt.status == "succeeded", srt.error
    assert srt.output is not None and srt.output.key.endswith(".srt")
    cues = Path(srt.output.path).read_text().split("\n\n")
    assert len(cues) == len(SENTENCES)
    number, times, text = cues[0].splitlines()
    assert number == "1" and re.fullmatch(r"00:00:0\d,\d{3} --> 00:00:0\d,\d{3}", times)
    assert text.startswith("[audio ")
    vtt = await run(
        producer,
        {"kind": "transcription", "file": str(path), "timestamps": "segment",
         "response_format": "vtt"},
    )  # fmt: skip
    assert vtt.output is not None
    assert Path(vtt.output.path).read_text().startswith("WEBVTT\n\n00:00:00.")
    with pytest.raises(InvalidRequestError, match="needs timestamps: 'segment'") as refused:
        await producer.enqueue(
            {"kind": "transcription", "file": str(path), "response_format": "srt"}
        )
    assert refused.value.param == "response_format"


async def test_compact_silence_uploads_less_and_keeps_original_times(
    producer: Producer,
    worker: MimoqWorker,
    talk: tuple[Path, list[tuple[float, float]]],
    sim: RunningSim,
) -> None:
    path, truth = talk
    total_s = truth[-1][1] + PAUSES_S[-1]
    plain = await run(producer, {"kind": "transcription", "file": str(path)})
    compact = await run(
        producer, {"kind": "transcription", "file": str(path), "compact_silence": True}
    )
    assert plain.status == compact.status == "succeeded", compact.error
    assert uploaded_s(plain.text or "") == pytest.approx(total_s, abs=0.05)
    # The 6 pauses over 1 s (15.2 s in all) become 0.32 s each; the rest are kept whole.
    long_pauses = [p for p in PAUSES_S if p > 1.0]
    expected = total_s - sum(p - 0.32 for p in long_pauses)
    assert uploaded_s(compact.text or "") == pytest.approx(expected, abs=0.2)
    both = await run(
        producer,
        {"kind": "transcription", "file": str(path), "compact_silence": True,
         "timestamps": "segment"},
    )  # fmt: skip
    assert both.segments is not None and len(both.segments) == len(SENTENCES)
    assert both.segments[-1].start == pytest.approx(truth[-1][0], abs=0.3)


async def test_telephone_and_misnamed_audio_mixed_with_plain_jobs(
    producer: Producer,
    worker: MimoqWorker,
    talk: tuple[Path, list[tuple[float, float]]],
    redis: ArqRedis,
    tmp_path: Path,
) -> None:
    need("sox", "lame")
    path, truth = talk
    ulaw = sox(path, tmp_path / "call-ulaw.wav", "-e", "u-law", "-r", "8000")
    adpcm = sox(path, tmp_path / "call-adpcm.wav", "-e", "ima-adpcm", "-r", "8000")
    mp3_as_wav = tmp_path / "voicemail.wav"
    mp3_as_wav.write_bytes(
        lame(path, tmp_path / "v.mp3", "--resample", "16", "-V", "6").read_bytes()
    )
    cut = tmp_path / "cut.wav"
    cut.write_bytes(path.read_bytes()[:100_000])
    jobs = {
        "ulaw": {"kind": "transcription", "file": str(ulaw)},
        "adpcm": {"kind": "transcription", "file": str(adpcm), "timestamps": "segment"},
        "mp3": {"kind": "transcription", "file": str(mp3_as_wav)},
        "plain": {"kind": "transcription", "file": str(path), "response_format": "text"},
    }
    # A foreign producer writes a job straight into Redis, bypassing the producer's checks.
    await redis.eval(
        wire.enqueue_script(), 4, *wire.enqueue_keys("raw-cut"), "raw-cut",
        json.dumps({"kind": "transcription", "file": str(cut)}),
    )  # fmt: skip
    results = dict(
        zip(jobs, await asyncio.gather(*(run(producer, j) for j in jobs.values())), strict=True)
    )
    assert {k: r.status for k, r in results.items()} == dict.fromkeys(jobs, "succeeded")
    # mu-law at 8 kHz is decoded and sent as 16 kHz 16-bit: the same length
    assert uploaded_s(results["ulaw"].text or "") == pytest.approx(truth[-1][1] + 1.0, abs=0.1)
    assert len(results["adpcm"].segments or []) == len(SENTENCES)
    raw = await producer.wait("raw-cut", timeout_s=60)
    assert raw.status == "failed" and raw.error is not None
    assert raw.error["type"] == "invalid_request_error" and "cut short" in str(raw.error["message"])


def test_batch_segments_srt_on_a_mixed_archive(sim: RunningSim, tmp_path: Path) -> None:
    need("espeak-ng", "sox", "lame")
    archive, data = tmp_path / "calls", tmp_path / "data"
    archive.mkdir()
    made = conversation(SENTENCES[:4], (0.8, 2.0, 1.0, 0.6))
    wav = made.write(archive / "monday.wav", subtype="PCM_16")
    sox(wav, archive / "tuesday.wav", "-e", "a-law", "-r", "8000")
    lame(wav, archive / "wednesday.mp3", "--resample", "8", "-b", "16")
    (archive / "thursday.wav").write_bytes(wav.read_bytes()[:50_000])  # cut off in a copy
    done = mimoq(
        "batch", str(archive), "--segments", "--format", "srt", "--compact-silence",
        "--progress", "none", env=batch_env(sim, data), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # thursday failed, the others did not
    assert re.search(
        r"failed: thursday\.wav: invalid_request_error: file: .* is cut short", done.stderr
    )
    for name in ("monday.wav", "tuesday.wav", "wednesday.mp3"):
        srt = (data / "calls" / f"{name}.srt").read_text()
        assert srt.count(" --> ") == 4, (name, srt)
    assert sim_stats(sim)["requests"]["mimo-v2.5-asr"] == 12  # 3 recordings x 4 segments
