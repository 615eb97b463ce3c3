"""WAV header parsing and the incremental AudioSink (wav/pcm in, wav/pcm out)."""

from __future__ import annotations

import io
import random
import struct
import wave
from dataclasses import dataclass

import pytest

from mimoq.core.audio import (
    MAX_WAV_HEADER_BYTES,
    MIMO_PCM,
    AudioContainer,
    AudioFormatError,
    AudioSink,
    WavFormat,
    parse_wav_header,
    wav_header,
)

PH = 0xFFFFFFFF  # the placeholder size streaming encoders write
CD = WavFormat(44_100, 2, 16)
S24 = WavFormat(48_000, 2, 24)
F32 = WavFormat(16_000, 1, 32, 3)
U8 = WavFormat(8_000, 1, 8)
SUBTYPE_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def chunk(cid: bytes, body: bytes) -> bytes:
    """A RIFF chunk, padded to even length."""
    return cid + struct.pack("<I", len(body)) + body + b"\x00" * (len(body) & 1)


def fmt_body(fmt: WavFormat, *, tag: int | None = None, block_align: int | None = None) -> bytes:
    return struct.pack(
        "<HHIIHH",
        fmt.audio_format if tag is None else tag,
        fmt.channels,
        fmt.sample_rate,
        fmt.byte_rate,
        fmt.block_align if block_align is None else block_align,
        fmt.bits_per_sample,
    )


def extensible_body(fmt: WavFormat, subtype: int) -> bytes:
    base = fmt_body(fmt, tag=0xFFFE)
    extension = struct.pack("<HHIH", 22, fmt.bits_per_sample, 3, subtype) + SUBTYPE_TAIL
    return base + extension


def riff(*chunks: bytes, riff_size: int | None = None, after: bytes = b"") -> bytes:
    """A RIFF/WAVE file of ``chunks`` then ``after`` (samples and trailing chunks, unframed)."""
    body = b"WAVE" + b"".join(chunks)
    size = len(body) + len(after) if riff_size is None else riff_size
    return b"RIFF" + struct.pack("<I", size) + body + after


def fmt_chunk(fmt: WavFormat) -> bytes:
    return chunk(b"fmt ", fmt_body(fmt))


def canonical(fmt: WavFormat, data: bytes) -> bytes:
    return wav_header(fmt, len(data)) + data


def data_head(size: int) -> bytes:
    return b"data" + struct.pack("<I", size)


def samples(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


# --- parse_wav_header -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("buf", "expected"),
    [
        (wav_header(MIMO_PCM, 480), (MIMO_PCM, 44, 480)),
        (wav_header(CD, 0), (CD, 44, None)),
        (riff(chunk(b"fmt ", fmt_body(CD)), data_head(PH)), (CD, 44, None)),
        # LIST, fact and JUNK before data, odd-sized (padded) ones included, fmt not first
        (
            riff(
                chunk(b"JUNK", bytes(28)),
                chunk(b"fmt ", fmt_body(S24)),
                chunk(b"LIST", b"INFOISFT\x05\x00\x00\x00Lavf\x00"),
                chunk(b"fact", struct.pack("<I", 10)),
                data_head(600),
            ),
            (S24, 12 + 36 + 24 + 26 + 12 + 8, 600),
        ),
        (riff(chunk(b"fmt ", fmt_body(F32)), data_head(64)), (F32, 44, 64)),
        (riff(chunk(b"fmt ", fmt_body(U8)), data_head(3)), (U8, 44, 3)),
        (riff(chunk(b"fmt ", fmt_body(CD) + b"\x00\x00"), data_head(4)), (CD, 46, 4)),
        # WAVE_FORMAT_EXTENSIBLE with a PCM or float subformat reads as plain PCM/float
        (riff(chunk(b"fmt ", extensible_body(S24, 1)), data_head(6)), (S24, 68, 6)),
        (riff(chunk(b"fmt ", extensible_body(F32, 3)), data_head(8)), (F32, 68, 8)),
    ],
)
def test_parse_wav_header(buf: bytes, expected: tuple[WavFormat, int, int | None]) -> None:
    assert parse_wav_header(buf) == expected
    # Any shorter prefix is "not yet", never a wrong answer or an error.
    offset = expected[1]
    for cut in range(offset):
        assert parse_wav_header(buf[:cut]) is None, cut
    assert parse_wav_header(bytearray(buf) + b"\x01\x02") == expected


@pytest.mark.parametrize(
    ("buf", "match"),
    [
        (b"ID3\x04\x00\x00\x00\x00", "not a RIFF/WAVE"),
        (b"RIFX" + bytes(8), "not a RIFF/WAVE"),
        (b"RIFF\x00\x00\x00\x00AVI ", "not a RIFF/WAVE"),
        (b"RF64", "not a RIFF/WAVE"),
        (b"\x00", "not a RIFF/WAVE"),
        (riff(data_head(4), chunk(b"fmt ", fmt_body(CD))), "data chunk before any fmt"),
        (riff(chunk(b"fmt ", fmt_body(CD)[:14]), data_head(4)), "shorter than 16"),
        (riff(chunk(b"fmt ", fmt_body(CD, tag=0x55)), data_head(4)), "format tag 0x0055"),
        (riff(chunk(b"fmt ", fmt_body(WavFormat(8000, 1, 12))), data_head(4)), "12-bit PCM"),
        (riff(chunk(b"fmt ", fmt_body(WavFormat(8000, 1, 64, 3))), data_head(4)), "64-bit float"),
        (riff(chunk(b"fmt ", fmt_body(CD, block_align=3)), data_head(4)), "block_align"),
        (riff(chunk(b"fmt ", fmt_body(WavFormat(8000, 0, 16))), data_head(4)), "0 channel"),
        (riff(chunk(b"fmt ", fmt_body(WavFormat(0, 1, 16))), data_head(4)), "at 0 Hz"),
        (riff(chunk(b"fmt ", extensible_body(S24, 0x55)), data_head(4)), "format tag 0x0055"),
        (riff(chunk(b"fmt ", extensible_body(S24, 1)[:30]), data_head(4)), "subformat"),
        # a header that would not end within 1 MiB, refused before it has all arrived
        (riff(fmt_chunk(CD)) + b"LIST" + struct.pack("<I", MAX_WAV_HEADER_BYTES), "larger than"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt " + struct.pack("<I", MAX_WAV_HEADER_BYTES), "larger than"),
    ],
)
def test_parse_wav_header_refuses(buf: bytes, match: str) -> None:
    with pytest.raises(AudioFormatError, match=match):
        parse_wav_header(buf)


def test_parse_wav_header_empty_is_undecided() -> None:
    assert parse_wav_header(b"") is None


# --- AudioSink ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    received: bytes
    source: AudioContainer
    output: AudioContainer
    expected: bytes  # the file as it must end up
    data_bytes: int
    fmt: WavFormat = MIMO_PCM


S = samples(4800)  # 0.1 s of MiMo pcm16
S6 = samples(6 * 100, seed=1)  # 100 frames of 24-bit stereo
LIST = chunk(b"LIST", b"INFOISFT\x05\x00\x00\x00Lavf\x00")


CASES = [
    Case(
        "wav->wav as received",
        canonical(MIMO_PCM, S),
        "wav",
        "wav",
        canonical(MIMO_PCM, S),
        len(S),
    ),
    Case(
        "wav->wav LIST before data",
        riff(fmt_chunk(CD), LIST, data_head(len(S)), after=S),
        "wav",
        "wav",
        riff(fmt_chunk(CD), LIST, data_head(len(S)), after=S),
        len(S),
        CD,
    ),
    Case(
        "wav->wav placeholder sizes patched",
        riff(fmt_chunk(MIMO_PCM), data_head(PH), riff_size=PH, after=S),
        "wav",
        "wav",
        canonical(MIMO_PCM, S),
        len(S),
    ),
    Case(
        "wav->wav zero sizes patched",
        riff(fmt_chunk(MIMO_PCM), data_head(0), riff_size=0, after=S),
        "wav",
        "wav",
        canonical(MIMO_PCM, S),
        len(S),
    ),
    Case(
        "wav->wav truncated answer: sizes shrink to what arrived",
        wav_header(MIMO_PCM, 2 * len(S)) + S,
        "wav",
        "wav",
        canonical(MIMO_PCM, S),
        len(S),
    ),
    Case(
        "wav->wav placeholder with a partial frame: cut",
        wav_header(MIMO_PCM, 0) + S + b"\x01",
        "wav",
        "wav",
        canonical(MIMO_PCM, S),
        len(S),
    ),
    Case(
        "wav->wav wrong RIFF size only: patched",
        riff(fmt_chunk(MIMO_PCM), data_head(len(S)), riff_size=7, after=S),
        "wav",
        "wav",
        canonical(MIMO_PCM, S),
        len(S),
    ),
    Case(
        "wav->wav chunk after data: kept",
        riff(fmt_chunk(MIMO_PCM), data_head(len(S)), after=S + LIST),
        "wav",
        "wav",
        riff(fmt_chunk(MIMO_PCM), data_head(len(S)), after=S + LIST),
        len(S),
    ),
    Case("wav->pcm", canonical(MIMO_PCM, S), "wav", "pcm", S, len(S)),
    Case(
        "wav->pcm LIST before, chunk after",
        riff(LIST, fmt_chunk(CD), data_head(len(S)), after=S + LIST),
        "wav",
        "pcm",
        S,
        len(S),
        CD,
    ),
    Case(
        "wav->pcm placeholder: everything after the header",
        riff(fmt_chunk(MIMO_PCM), data_head(PH), after=S + b"\x07"),
        "wav",
        "pcm",
        S,
        len(S),
    ),
    Case(
        "wav->pcm 24-bit stereo extensible, partial frame cut",
        riff(chunk(b"fmt ", extensible_body(S24, 1)), data_head(PH), after=S6 + b"\x01\x02\x03"),
        "wav",
        "pcm",
        S6,
        len(S6),
        S24,
    ),
    Case("wav->pcm float", canonical(F32, S[:400]), "wav", "pcm", S[:400], 400, F32),
    Case("pcm->pcm passes through", S, "pcm", "pcm", S, len(S)),
    Case("pcm->pcm half a sample dropped", S + b"\x09", "pcm", "pcm", S, len(S)),
    Case("pcm->wav", S + b"\x09", "pcm", "wav", canonical(MIMO_PCM, S), len(S)),
]


def write_in_pieces(sink: AudioSink, data: bytes, size: int) -> None:
    for i in range(0, len(data), size):
        sink.write(data[i : i + size])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("piece", [1, 7, 45, 1 << 20])
def test_audio_sink(case: Case, piece: int) -> None:
    f = io.BytesIO()
    sink = AudioSink(f, source=case.source, output=case.output)
    write_in_pieces(sink, case.received, piece)
    info = sink.finish()
    assert f.getvalue() == case.expected
    assert info.bytes == len(case.expected)
    assert info.data_bytes == case.data_bytes
    assert info.format == case.fmt
    assert info.duration_s == pytest.approx(case.data_bytes / case.fmt.byte_rate)


def test_pcm_to_wav_with_another_format_is_a_valid_wav() -> None:
    f = io.BytesIO()
    sink = AudioSink(f, source="pcm", output="wav", pcm_format=CD)
    write_in_pieces(sink, S, 1000)
    info = sink.finish()
    with wave.open(io.BytesIO(f.getvalue())) as w:  # the stdlib reader agrees
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (44_100, 2, 2)
        assert w.readframes(w.getnframes()) == S
    assert info.duration_s == pytest.approx(len(S) / CD.byte_rate)


def test_sample_rate_is_read_from_the_header_not_assumed() -> None:
    f = io.BytesIO()
    sink = AudioSink(f, source="wav", output="pcm")
    sink.write(wav_header(CD, len(S)) + S)
    info = sink.finish()
    assert info.format.sample_rate == 44_100
    assert info.duration_s == pytest.approx(len(S) / (44_100 * 4))


def test_patches_are_relative_to_where_the_sink_started() -> None:
    f = io.BytesIO()
    f.write(b"prefix")
    sink = AudioSink(f, source="wav", output="wav")
    sink.write(riff(chunk(b"fmt ", fmt_body(MIMO_PCM)), data_head(PH), after=S + b"\x01"))
    sink.finish()
    assert f.getvalue() == b"prefix" + wav_header(MIMO_PCM, len(S)) + S


def test_patched_file_is_a_valid_wav_for_the_stdlib() -> None:
    f = io.BytesIO()
    sink = AudioSink(f, source="wav", output="wav")
    write_in_pieces(sink, wav_header(MIMO_PCM, 0) + S, 333)
    sink.finish()
    with wave.open(io.BytesIO(f.getvalue())) as w:
        assert w.getnframes() == len(S) // 2
        assert w.readframes(w.getnframes()) == S


@pytest.mark.parametrize(
    ("received", "source", "match"),
    [
        (b"", "wav", "no audio"),
        (b"", "pcm", "no audio"),
        (b"\x01", "pcm", "no audio"),  # half a sample is not audio
        (wav_header(MIMO_PCM, 0), "wav", "no audio"),
        (wav_header(MIMO_PCM, 100), "wav", "no audio"),
        (wav_header(MIMO_PCM, 0) + b"\x01", "wav", "no audio"),
        (wav_header(MIMO_PCM, 0)[:30], "wav", "truncated WAV"),
        (b"ID3\x04" + bytes(100), "wav", "not a RIFF/WAVE"),
        (b'{"error":{}}', "wav", "not a RIFF/WAVE"),
    ],
)
@pytest.mark.parametrize("output", ["wav", "pcm"])
def test_audio_sink_refuses(
    received: bytes, source: AudioContainer, match: str, output: AudioContainer
) -> None:
    sink = AudioSink(io.BytesIO(), source=source, output=output)
    with pytest.raises(AudioFormatError, match=match):
        write_in_pieces(sink, received, 5)
        sink.finish()


def test_not_riff_fails_on_the_first_bytes_not_at_the_end() -> None:
    sink = AudioSink(io.BytesIO(), source="wav", output="wav")
    with pytest.raises(AudioFormatError, match="not a RIFF/WAVE"):
        sink.write(b"OggS")


def test_only_the_header_is_buffered() -> None:
    f = io.BytesIO()
    sink = AudioSink(f, source="wav", output="pcm")
    sink.write(wav_header(MIMO_PCM, len(S))[:40])
    assert f.getvalue() == b""  # not decidable yet: held back
    sink.write(wav_header(MIMO_PCM, len(S))[40:] + S[:10])
    assert f.getvalue() == S[:10]  # from here on, written as it arrives
    sink.write(S[10:])
    assert f.getvalue() == S
