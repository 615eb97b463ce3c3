"""Local input paths: read only inside the input roots, only regular files, content never quoted.

Unit level (no Redis): the same checks the worker and the producer make before any read.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from mimoq.core.audio import WavFormat
from mimoq.core.errors import InvalidRequestError
from mimoq.core.inputs import confine, input_roots, open_local, ref_kind
from mimoq.core.settings import Settings
from mimoq.core.sources import inspect_audio
from mimoq.sim.audio_gen import wav_header_with_text


def _wav(path: Path, seconds: float = 0.5) -> Path:
    samples = b"\x01\x00" * int(16_000 * seconds)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(wav_header_with_text(WavFormat(16_000, 1, 16), len(samples), "x") + samples)
    return path


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """An input root with one good recording, and a folder outside it."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    _wav(root / "ok.wav")
    _wav(outside / "secret.wav")
    return root, outside


def test_a_file_inside_the_root_is_read(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    audio = inspect_audio(str(root / "ok.wav"), param="file", roots=(root,))
    assert audio.path == root / "ok.wav" and audio.mime == "audio/wav" and audio.size > 44
    # file:// and a path relative to the (first) root name the same file
    assert inspect_audio((root / "ok.wav").as_uri(), param="file", roots=(root,)).path == audio.path
    assert inspect_audio("ok.wav", param="file", roots=(root,)).path == audio.path


@pytest.mark.parametrize(
    "ref",
    [
        "{outside}/secret.wav",  # absolute, outside
        "file://{outside}/secret.wav",
        "{root}/../outside/secret.wav",  # .. out of the root
        "../outside/secret.wav",  # relative, climbing out of the root
        "{root}/sub/../../outside/secret.wav",
        "/etc/passwd.wav",
    ],
)
def test_paths_outside_the_roots_are_refused(layout: tuple[Path, Path], ref: str) -> None:
    root, outside = layout
    ref = ref.format(root=root, outside=outside)
    with pytest.raises(InvalidRequestError) as info:
        inspect_audio(ref, param="file", roots=(root,))
    assert info.value.param == "file"
    assert "outside the folders local inputs may come from" in info.value.message
    assert "MIMOQ_INPUT_ROOTS" in info.value.message


def test_a_symlink_escaping_the_root_is_refused_without_naming_its_target(
    layout: tuple[Path, Path],
) -> None:
    root, _ = layout
    link = root / "innocent.wav"
    link.symlink_to("/etc/passwd")
    with pytest.raises(InvalidRequestError) as info:
        inspect_audio(str(link), param="voice", roots=(root,))
    message = info.value.message
    assert info.value.param == "voice" and "outside the folders" in message
    assert "passwd" not in message and "root:" not in message


def test_a_symlink_into_the_root_is_fine_and_one_within_it_too(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    (root / "alias.wav").symlink_to(root / "ok.wav")
    assert (
        inspect_audio(str(root / "alias.wav"), param="file", roots=(root,)).path == root / "ok.wav"
    )


def test_content_is_never_quoted(tmp_path: Path) -> None:
    root = tmp_path
    fake = root / "fake.wav"
    fake.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(InvalidRequestError) as info:
        inspect_audio(str(fake), param="file", roots=(root,))
    assert "root:x" not in info.value.message and "neither WAV nor MP3" in info.value.message
    mp3 = root / "fake.mp3"
    mp3.write_bytes(b"daemon:x:1:1:daemon")
    with pytest.raises(InvalidRequestError) as info:
        inspect_audio(str(mp3), param="file", roots=(root,))
    assert "daemon" not in info.value.message


def test_a_fifo_is_refused_at_once_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def attempt() -> None:
        try:
            inspect_audio(str(fifo), param="file", roots=(tmp_path,))
        except BaseException as exc:
            outcome.append(exc)

    # A blocking open of a FIFO waits for a writer forever: run it where a hang is visible.
    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout=30)
    if thread.is_alive():  # unblock the reader so the test process can exit, then fail
        with open(fifo, "wb"):
            pass
        pytest.fail("opening a FIFO input blocked")
    assert len(outcome) == 1 and isinstance(outcome[0], InvalidRequestError)
    assert "not a regular file" in outcome[0].message


def test_a_folder_and_a_device_are_refused(tmp_path: Path) -> None:
    (tmp_path / "dir.wav").mkdir()
    with pytest.raises(InvalidRequestError, match="not a regular file"):
        open_local(str(tmp_path / "dir.wav"), (tmp_path,), "file")
    with pytest.raises(InvalidRequestError, match="outside"):
        open_local("/dev/zero", (tmp_path,), "file")
    with pytest.raises(InvalidRequestError, match="not a regular file"):
        open_local("/dev/zero", (Path("/dev"),), "file")


def test_a_missing_file_inside_the_root_says_so(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="does not exist"):
        inspect_audio(str(tmp_path / "gone.wav"), param="file", roots=(tmp_path,))


def test_a_remote_file_uri_host_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="not this machine"):
        confine("file://fileserver/share/a.wav", (tmp_path,), "file")


def test_the_fifo_check_never_blocks_the_event_loop(tmp_path: Path) -> None:
    """The worker checks inputs in a thread: its loop keeps ticking while a check runs."""
    from mimoq.core.storage import LocalStorage
    from mimoq.worker.pipeline import inspect_input

    class Deps:
        settings = Settings(storage={"data_dir": tmp_path / "data", "input_roots": str(tmp_path)})
        storage = LocalStorage(tmp_path / "data")

    os.mkfifo(tmp_path / "p.wav")

    async def main() -> None:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        with pytest.raises(InvalidRequestError):
            await inspect_input(Deps(), str(tmp_path / "p.wav"), param="file")  # type: ignore[arg-type]
        task.cancel()
        assert ticks > 0

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 30


def test_input_roots_default_to_the_data_dir_plus_local_storage(tmp_path: Path) -> None:
    settings = Settings(storage={"data_dir": tmp_path / "data"})
    assert input_roots(settings) == (tmp_path / "data",)
    settings = Settings(
        storage={
            "data_dir": tmp_path / "data",
            "input_roots": f"{tmp_path}/a{os.pathsep}{tmp_path}/b",
        }
    )
    assert input_roots(settings) == (tmp_path / "a", tmp_path / "b", tmp_path / "data")


@pytest.mark.parametrize(
    ("ref", "kind"),
    [
        ("data:audio/wav;base64,AAAA", "data"),
        ("/a/b.wav", "local"),
        ("file:///a/b.wav", "local"),
        ("S3://bucket/a.wav", "object"),
        ("gs://bucket/a.wav", "object"),
        ("az://acct/c/a.wav", "object"),
        ("https://example.com/a.wav?sig=1", "http"),
    ],
)
def test_reference_kinds(ref: str, kind: str) -> None:
    assert ref_kind(ref) == kind
