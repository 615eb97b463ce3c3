"""Batch planning: sources, derived ids, mirrored outputs, the digest cache, ETA arithmetic."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mimoq.core.audio import WavFormat
from mimoq.producer.batch_plan import (
    BatchOptions,
    DigestCache,
    PlannedItem,
    SourceKind,
    default_run_id,
    derive_job_id,
    estimate_calls,
    plan,
    source_kind,
)
from mimoq.producer.batch_run import QuotaRate, eta_s
from mimoq.producer.batch_state import RunFiles
from tests.batch.helpers import tones, wav_bytes, write_wav

BASE = {"kind": "speech", "input": "Hello.", "voice": "Mia", "output": "a/1.wav"}


@pytest.mark.parametrize(
    ("a", "b", "content_a", "content_b", "same"),
    [
        (BASE, dict(BASE), None, None, True),
        (
            BASE,
            {**BASE, "id": "given", "callback": {"url": "http://x"}, "metadata": {"k": 1}},
            None,
            None,
            True,
        ),
        (BASE, {**BASE, "voice": None}, None, None, False),  # None fields are absent, not equal
        (BASE, {**BASE, "voice": "Chloe"}, None, None, False),
        (BASE, {**BASE, "input": "Hello!"}, None, None, False),
        # the same text under another output name is the same job: paid for once
        (BASE, {**BASE, "output": "a/2.wav"}, None, None, True),
        (
            {"kind": "transcription", "file": "/a.wav"},
            {"kind": "transcription", "file": "/b.wav"},
            "c1",
            "c1",
            True,
        ),
        (
            {"kind": "transcription", "file": "/a.wav"},
            {"kind": "transcription", "file": "/a.wav"},
            "c1",
            "c2",
            False,
        ),
    ],
)
def test_derived_ids_follow_content_and_parameters(
    a: dict[str, object],
    b: dict[str, object],
    content_a: str | None,
    content_b: str | None,
    same: bool,
) -> None:
    assert (derive_job_id(a, content_a) == derive_job_id(b, content_b)) is same


@pytest.mark.parametrize(
    ("job", "prefix"), [(BASE, "s-"), ({"kind": "transcription", "file": "x"}, "t-")]
)
def test_derived_ids_are_valid_job_ids(job: dict[str, object], prefix: str) -> None:
    job_id = derive_job_id(job, "abc")
    assert job_id.startswith(prefix) and len(job_id) == 42


@pytest.mark.parametrize(
    ("name", "is_dir", "kind"),
    [("archive", True, SourceKind.directory), ("jobs.jsonl", False, SourceKind.manifest),
     ("jobs.NDJSON", False, SourceKind.manifest), ("lines.txt", False, SourceKind.lines),
     ("book.csv", False, SourceKind.lines)],
)  # fmt: skip
def test_source_kind(tmp_path: Path, name: str, is_dir: bool, kind: SourceKind) -> None:
    path = tmp_path / name
    path.mkdir() if is_dir else path.write_text("")
    assert source_kind(path) == kind


def test_run_ids_are_stable_and_differ_with_options(tmp_path: Path) -> None:
    first = default_run_id(tmp_path / "my archive", SourceKind.directory, BatchOptions())
    assert first == default_run_id(tmp_path / "my archive", SourceKind.directory, BatchOptions())
    assert first.startswith("my-archive-")
    other = BatchOptions(defaults={"language": "zh"})
    assert first != default_run_id(tmp_path / "my archive", SourceKind.directory, other)


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    fmt = WavFormat(16_000, 1, 16)
    for rel in (
        "a.wav",
        "b.WAV",
        "deep/er/c.wav",
        "deep/c.mp3",
        "deep/c.wav",
        ".cache/x.wav",
        "notes.txt",
    ):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_wav(path, tones(16_000, [(0.1 + len(rel) / 100, 0.0)]), fmt)
    import soundfile

    soundfile.write(root / "deep/d.flac", tones(16_000, [(0.2, 0.0)]), 16_000)
    return root


def test_directory_plan_mirrors_the_tree(archive: Path, tmp_path: Path) -> None:
    files = RunFiles(tmp_path / "data", "run")
    items = plan(archive, SourceKind.directory, BatchOptions(defaults={"language": "en"}), files)
    by_input = {i.input: i for i in items}
    assert sorted(by_input) == [
        "a.wav",
        "b.WAV",
        "deep/c.mp3",
        "deep/c.wav",
        "deep/d.flac",
        "deep/er/c.wav",
    ]
    assert by_input["a.wav"].job == {
        "kind": "transcription", "language": "en", "file": str((archive / "a.wav").resolve()),
        "output": "archive/a.wav.json", "id": by_input["a.wav"].job_id,
    }  # fmt: skip
    assert by_input["deep/er/c.wav"].job["output"] == "archive/deep/er/c.wav.json"  # type: ignore[index]
    # the whole file name is kept: two recordings never share an output
    assert by_input["deep/c.mp3"].job["output"] == "archive/deep/c.mp3.json"  # type: ignore[index]
    assert by_input["deep/c.wav"].job["output"] == "archive/deep/c.wav.json"  # type: ignore[index]
    flac = by_input["deep/d.flac"]
    assert flac.convert_from == archive / "deep/d.flac"
    assert Path(flac.job["file"]).parent == files.path("converted")  # type: ignore[index]
    # the fixture's bytes depend on the name's length: deep/c.mp3 and deep/c.wav hold the
    # same recording, and so do a.wav and b.WAV: one job for each pair
    assert by_input["deep/c.mp3"].job_id == by_input["deep/c.wav"].job_id
    assert by_input["a.wav"].job_id == by_input["b.WAV"].job_id
    assert len({i.job_id for i in items}) == len(items) - 2


def test_directory_plan_takes_globs_and_an_output_prefix(archive: Path, tmp_path: Path) -> None:
    options = BatchOptions(
        patterns=("deep/**/*.wav",),
        out_prefix="transcripts/2024",
        defaults={"response_format": "text"},
    )
    items = plan(archive, SourceKind.directory, options, RunFiles(tmp_path / "data", "run"))
    assert [(i.input, i.job["output"]) for i in items] == [  # type: ignore[index]
        ("deep/c.wav", "transcripts/2024/deep/c.wav.txt"), ("deep/er/c.wav", "transcripts/2024/deep/er/c.wav.txt"),
    ]  # fmt: skip


def test_output_names_do_not_depend_on_what_else_a_run_takes(archive: Path, tmp_path: Path) -> None:
    def outputs(*patterns: str) -> dict[str, str]:
        options = BatchOptions(patterns=patterns) if patterns else BatchOptions()
        items = plan(archive, SourceKind.directory, options, RunFiles(tmp_path / "data", "run"))
        return {i.input: i.job["output"] for i in items if i.job}

    everything = outputs()
    for subset in (outputs("**/*.wav"), outputs("deep/c.wav"), outputs("**/*.mp3")):
        assert subset and all(everything[name] == key for name, key in subset.items())
    assert len(set(everything.values())) == len(everything)


def test_the_same_recording_under_two_names_is_one_job(tmp_path: Path) -> None:
    root = tmp_path / "calls"
    (root / "copies").mkdir(parents=True)
    audio = wav_bytes(tones(16_000, [(0.3, 0.1)]), WavFormat(16_000, 1, 16))
    (root / "monday.wav").write_bytes(audio)
    (root / "copies" / "monday (1).wav").write_bytes(audio)
    (root / "tuesday.wav").write_bytes(audio + b"\x00\x00")
    items = plan(root, SourceKind.directory, BatchOptions(), RunFiles(tmp_path / "data", "run"))
    ids = {i.input: i.job_id for i in items}
    assert ids["monday.wav"] == ids["copies/monday (1).wav"] != ids["tuesday.wav"]
    assert items[0].job["output"] != items[1].job["output"]  # type: ignore[index]


def test_manifest_plan(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    audio = write_wav(
        tmp_path / "in" / "talk.wav", tones(16_000, [(0.2, 0.0)]), WavFormat(16_000, 1, 16)
    )
    manifest = tmp_path / "jobs.jsonl"
    lines = [
        {"kind": "transcription", "file": "in/talk.wav"},
        {"kind": "speech", "input": "Hi.", "id": "mine", "output": "x/hi.wav"},
        "not an object",
        {"kind": "speech", "input": "Hey.", "response_format": "pcm"},
    ]
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n{broken\n")
    items = plan(manifest, SourceKind.manifest, BatchOptions(), RunFiles(tmp_path / "data", "run"))
    assert [i.input for i in items] == [f"jobs.jsonl:{n}" for n in (1, 2, 3, 4, 6)]
    assert items[0].job["file"] == str(audio.resolve())  # type: ignore[index]
    assert items[0].job["output"] == f"jobs/{items[0].job_id}.json"  # type: ignore[index]
    assert (items[1].job_id, items[1].job["output"]) == ("mine", "x/hi.wav")  # type: ignore[index]
    assert items[2].job is None and "not a JSON object" in (items[2].error or "")
    assert items[3].job["output"].endswith(".pcm")  # type: ignore[index]
    assert items[4].job is None and "not JSON" in (items[4].error or "")


def test_lines_plan_from_text_and_csv(tmp_path: Path) -> None:
    text = tmp_path / "book.txt"
    text.write_text("First line.\n\n  \nSecond line.\n")
    items = plan(
        text,
        SourceKind.lines,
        BatchOptions(defaults={"voice": "Mia"}),
        RunFiles(tmp_path / "d", "r"),
    )
    assert [(i.input, i.job["input"], i.job["output"]) for i in items] == [  # type: ignore[index]
        ("book.txt:1", "First line.", "book/00001.wav"), ("book.txt:4", "Second line.", "book/00004.wav"),
    ]  # fmt: skip
    table = tmp_path / "cast.csv"
    table.write_text('Text,voice,output\n"Hello, world.",Chloe,greet/hello.wav\nBye.,,\n')
    items = plan(
        table,
        SourceKind.lines,
        BatchOptions(defaults={"voice": "Mia"}),
        RunFiles(tmp_path / "d", "r"),
    )
    assert [(i.job["input"], i.job["voice"], i.job["output"]) for i in items] == [  # type: ignore[index]
        ("Hello, world.", "Chloe", "greet/hello.wav"), ("Bye.", "Mia", "cast/00003.wav"),
    ]  # fmt: skip


def test_excel_csv_utf8_and_a_bom_text_file_are_read(tmp_path: Path) -> None:
    # Excel's "CSV UTF-8": a byte-order mark, CRLF line ends, a quoted field with a comma.
    table = tmp_path / "cast.csv"
    table.write_bytes(
        '\ufeffvoice,text\r\nChloe,"Hello, world."\r\nMia,Zweite Zeile – ü\r\n'.encode()
    )
    items = plan(table, SourceKind.lines, BatchOptions(), RunFiles(tmp_path / "d", "r"))
    assert [(i.job["voice"], i.job["input"]) for i in items] == [  # type: ignore[index]
        ("Chloe", "Hello, world."), ("Mia", "Zweite Zeile – ü"),
    ]  # fmt: skip
    text = tmp_path / "notepad.txt"
    text.write_bytes("\ufeffFirst line.\r\nSecond line.\r\n".encode())
    items = plan(text, SourceKind.lines, BatchOptions(), RunFiles(tmp_path / "d", "r"))
    assert [i.job["input"] for i in items] == ["First line.", "Second line."]  # type: ignore[index]
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_bytes(b"\xef\xbb\xbf" + b'{"kind": "speech", "input": "Hi."}\r\n')
    items = plan(manifest, SourceKind.manifest, BatchOptions(), RunFiles(tmp_path / "d", "r"))
    assert items[0].job is not None and items[0].job["input"] == "Hi."


def test_a_csv_without_a_text_column_is_refused(tmp_path: Path) -> None:
    table = tmp_path / "bad.csv"
    table.write_text("words,voice\nhi,Mia\n")
    with pytest.raises(ValueError, match="needs a 'text' column"):
        plan(table, SourceKind.lines, BatchOptions(), RunFiles(tmp_path / "d", "r"))


def test_digests_are_reused_while_size_and_mtime_hold(tmp_path: Path) -> None:
    files = RunFiles(tmp_path / "data", "run")
    path = tmp_path / "a.bin"
    path.write_bytes(b"one")
    stat = path.stat()
    first = DigestCache(files)
    digest = first.sha256(path)
    first.save()
    path.write_bytes(b"two")  # same size; put the old mtime back
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert DigestCache(files).sha256(path) == digest  # trusted from the cache: not re-read
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert DigestCache(files).sha256(path) != digest


@pytest.mark.parametrize(
    ("kind", "size", "text", "calls"),
    [("speech", 0, "x" * 10, 1), ("speech", 0, "x" * 2500, 1), ("speech", 0, "x" * 2501, 2),
     ("speech", 0, "x" * 10_000, 4), ("transcription", 1000, "", 1),
     ("transcription", 7_000_000, "", 1), ("transcription", 38_400_000, "", 6)],
)  # fmt: skip
def test_estimate_calls(kind: str, size: int, text: str, calls: int) -> None:
    assert estimate_calls(kind, size=size, text=text)[0] == calls


def test_segments_are_estimated_as_a_call_every_few_seconds() -> None:
    ten_minutes = 10 * 60 * 32_000  # bytes of 16 kHz mono 16-bit
    assert estimate_calls("transcription", size=ten_minutes)[0] == 3
    assert estimate_calls("transcription", size=ten_minutes, segments=True)[0] == 120


@pytest.mark.parametrize(
    ("quota", "calls", "audio_s", "seconds"),
    [
        (QuotaRate(requests_per_s=100 / 60), 100, 0.0, 60.0),
        (QuotaRate(requests_per_s=2.0), 10, 0.0, 5.0),
        # ASR: 10K tokens/min binds before 100 requests/min
        (
            QuotaRate(100 / 60, 10_000 / 60, 21.0, 11.25),
            60,
            3600.0,
            (60 * 21 + 3600 * 11.25) / (10_000 / 60),
        ),
    ],
)
def test_quota_seconds(quota: QuotaRate, calls: int, audio_s: float, seconds: float) -> None:
    assert quota.seconds_for(calls, audio_s) == pytest.approx(seconds)


def item(model_kind: str, calls: int = 1, audio_s: float = 0.0) -> PlannedItem:
    return PlannedItem("x", {"kind": model_kind, "id": "x"}, calls=calls, audio_s=audio_s)


@pytest.mark.parametrize(
    ("remaining", "rate", "expected"),
    [
        ([], None, 0.0),
        ([item("speech")] * 10, None, 10 / 2.0),  # the quota alone
        ([item("speech")] * 10, 0.5, 20.0),  # slower than the quota: what the run achieves
        ([item("speech")] * 10, 100.0, 5.0),  # faster than the quota cannot last
        (
            [item("speech")] * 4 + [item("transcription", 2)] * 4,
            None,
            8 / 1.0,
        ),  # models in parallel
    ],
)
def test_eta_knows_the_quota(
    remaining: list[PlannedItem], rate: float | None, expected: float
) -> None:
    quotas = {"mimo-v2.5-tts": QuotaRate(2.0), "mimo-v2.5-asr": QuotaRate(1.0)}
    assert eta_s(remaining, quotas, rate) == pytest.approx(expected)


def test_eta_unknown_without_quota_or_rate() -> None:
    assert eta_s([item("speech")], None, None) is None


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("**/*.wav", "a.wav", True),
        ("**/*.wav", "x/y/a.WAV", True),
        ("*.wav", "x/a.wav", False),  # * stays in its folder
        ("x/*.wav", "x/a.wav", True),
        ("x/**/*.wav", "x/a.wav", True),
        ("x/**/*.wav", "x/y/z/a.wav", True),
        ("x/**/*.wav", "y/a.wav", False),
        ("talk-?.mp3", "talk-1.mp3", True),
        ("talk-?.mp3", "talk-10.mp3", False),
        ("a+b.wav", "a+b.wav", True),  # regex characters are literal
        ("**", "anything/at/all", True),
    ],
)
def test_glob_patterns(pattern: str, path: str, matches: bool) -> None:
    from mimoq.producer.batch_plan import glob_regex

    assert bool(glob_regex(pattern).fullmatch(path)) is matches


def test_planned_audio_seconds_come_from_the_content(tmp_path: Path) -> None:
    # The ETA's token estimate: a 32 kbit/s MP3 holds 4x the seconds its size says as WAV.
    from tests.support.speech import lame, need

    need("lame")
    root = tmp_path / "calls"
    root.mkdir()
    wav = write_wav(root / "a.wav", tones(16_000, [(6.0, 0.0)]), WavFormat(16_000, 1, 16))
    lame(wav, root / "a.mp3", "--resample", "16", "-b", "32")
    items = plan(root, SourceKind.directory, BatchOptions(), RunFiles(tmp_path / "data", "r"))
    seconds = {i.input: i.audio_s for i in items}
    assert seconds["a.wav"] == pytest.approx(6.0)
    assert seconds["a.mp3"] == pytest.approx(6.0, abs=0.25)  # was 0.75 from its size
