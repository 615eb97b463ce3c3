"""Incremental base64 decoding, the streaming audio extractor, and streamed base64 encoding."""

from __future__ import annotations

import base64
import io
import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mimoq.core.audio import MIMO_PCM, AudioSink, wav_header
from mimoq.core.b64stream import (
    AudioDataExtractor,
    Base64Decoder,
    Base64StreamError,
    aiter_base64_file,
    b64_encoded_len,
    iter_base64_file,
)

# Bytes whose base64 is full of '/' and '+' (0xff.. -> "////"), so escapes of '/' matter.
SLASHY = bytes(range(256)) + b"\xff" * 30 + b"\xfb\xef\xbe" * 10


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def decode_in_pieces(text: bytes, cuts: list[int]) -> bytes:
    dec = Base64Decoder()
    bounds = [0, *sorted(cuts), len(text)]
    out = b"".join(dec.feed(text[a:b]) for a, b in itertools.pairwise(bounds))
    return out + dec.finish()


# --- Base64Decoder ----------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"a", b"ab", b"abc", b"abcd", b"abcde", SLASHY])
def test_decoder_round_trips_at_every_pair_of_split_points(data: bytes) -> None:
    text = base64.b64encode(data)
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1, 7):
            assert decode_in_pieces(text, [i, j]) == data, (i, j)


@given(
    data=st.binary(max_size=600),
    cuts=st.lists(st.integers(min_value=0, max_value=900), max_size=12),
    wrap=st.sampled_from([0, 4, 76, 5]),
    newline=st.sampled_from([b"\n", b"\r\n", b" ", b"\t"]),
)
def test_any_chunking_of_any_bytes_round_trips(
    data: bytes, cuts: list[int], wrap: int, newline: bytes
) -> None:
    text = base64.b64encode(data)
    if wrap:  # MIME-style line breaks (or stray whitespace) anywhere in the text
        text = newline.join(text[i : i + wrap] for i in range(0, len(text), wrap)) + newline
    assert decode_in_pieces(text, [c % (len(text) + 1) for c in cuts]) == data
    whole = Base64Decoder()
    whole.feed(text)
    assert whole.chars == len(base64.b64encode(data))  # whitespace is not counted


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        ([b""], b""),
        ([b"QUJD"], b"ABC"),
        ([b"QU\nJD\r\n"], b"ABC"),
        ([b" Q U J D "], b"ABC"),
        ([b"QQ", b"==", b"\n"], b"A"),
        ([b"QUI", b"="], b"AB"),
        ([b"QUJD", b"\r\n", b"QQ=="], b"ABCA"),
        ([b"\n\n\n"], b""),
    ],
)
def test_decoder_accepts(pieces: list[bytes], expected: bytes) -> None:
    dec = Base64Decoder()
    out = b"".join(dec.feed(p) for p in pieces) + dec.finish()
    assert out == expected
    assert dec.chars == sum(len(p.translate(None, b" \t\r\n")) for p in pieces)


@pytest.mark.parametrize(
    ("pieces", "why"),
    [
        ([b"QU*D"], "a character outside the alphabet"),
        ([b"QUJD-_-_"], "the URL-safe alphabet"),
        ([b"QUJD\xc3\xa9\xc3\xa9"], "non-ASCII"),
        ([b"QUJD\x00\x00\x00\x00"], "a NUL"),
        ([b"QQ=A"], "data after padding in one group"),
        ([b"QQ==QUJD"], "data after padding in one feed"),
        ([b"QQ==", b"QUJD"], "data after padding in a later feed"),
        ([b"QQ==", b"\n", b"Q"], "a lone character after padding"),
        ([b"Q==="], "three padding characters"),
        ([b"====", b""], "only padding"),
        ([b"QUJ"], "a truncated group"),
        ([b"Q"], "a single character"),
        ([b"QUJDQQ"], "padding missing"),
    ],
)
def test_decoder_refuses(pieces: list[bytes], why: str) -> None:
    dec = Base64Decoder()
    with pytest.raises(Base64StreamError):
        for p in pieces:
            dec.feed(p)
        dec.finish()


# --- AudioDataExtractor: MiMo-shaped bodies --------------------------------------------------


def mimo_body(
    data: Any,
    *,
    audio_first: bool = False,
    data_first: bool = True,
    usage: bool = True,
    usage_first: bool = False,
    transcript: Any = None,
) -> dict[str, Any]:
    """A non-streaming TTS answer as docs/mimo-dialect.md describes it, in a chosen key order."""
    audio_items = [("data", data), ("id", "a_1"), ("expires_at", None), ("transcript", transcript)]
    if not data_first:
        audio_items.reverse()
    message_items: list[tuple[str, Any]] = [("role", "assistant"), ("content", "")]
    audio = ("audio", dict(audio_items))
    message_items.insert(0 if audio_first else 2, audio)
    top: list[tuple[str, Any]] = [
        ("id", "chatcmpl-1"),
        ("object", "chat.completion"),
        ("model", "mimo-v2.5-tts"),
        ("choices", [{"index": 0, "message": dict(message_items), "finish_reason": "stop"}]),
    ]
    if usage:
        top.insert(0 if usage_first else 4, ("usage", {"prompt_tokens": 9, "total_tokens": 12}))
    return dict(top)


def run(
    raw: bytes, chunks: list[int] | int = 1 << 16, **kw: Any
) -> tuple[bytes, dict[str, Any], AudioDataExtractor]:
    """Feed ``raw`` in pieces (a size, or cut points); return audio, skeleton, extractor."""
    out: list[bytes] = []
    ex = AudioDataExtractor(out.append, **kw)
    if isinstance(chunks, int):
        for i in range(0, len(raw), chunks):
            ex.feed(raw[i : i + chunks])
    else:
        bounds = [0, *chunks, len(raw)]
        for a, b in itertools.pairwise(bounds):
            ex.feed(raw[a:b])
    skeleton = ex.finish()
    return b"".join(out), skeleton, ex


def with_empty_data(body: dict[str, Any]) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(body))
    copy["choices"][0]["message"]["audio"]["data"] = ""
    return copy


def encode(body: dict[str, Any], *, escape_slashes: bool = False, ascii_only: bool = True) -> bytes:
    raw = json.dumps(body, ensure_ascii=ascii_only).encode()
    # PHP-style encoders escape every '/', and base64 is full of them.
    return raw.replace(b"/", b"\\/") if escape_slashes else raw


SHAPES: list[dict[str, Any]] = [
    {},
    {"audio_first": True},
    {"data_first": False},
    {"audio_first": True, "data_first": False},
    {"usage": False},
    {"usage_first": True},
    {"transcript": '你好 "data":"QUJD" \\ /'},
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: ",".join(s) or "default")
@pytest.mark.parametrize("escape_slashes", [False, True])
@pytest.mark.parametrize("ascii_only", [False, True])
def test_real_shaped_body_splits_audio_from_skeleton(
    shape: dict[str, Any], escape_slashes: bool, ascii_only: bool
) -> None:
    body = mimo_body(b64(SLASHY), **shape)
    raw = encode(body, escape_slashes=escape_slashes, ascii_only=ascii_only)
    audio, skeleton, ex = run(raw, 64)
    assert audio == SLASHY
    assert skeleton == with_empty_data(body)
    assert ex.found
    assert ex.b64_chars == len(b64(SLASHY))


@pytest.mark.parametrize("escape_slashes", [False, True])
def test_split_at_every_byte(escape_slashes: bool) -> None:
    payload = SLASHY[:40]
    body = mimo_body(b64(payload), transcript='a\\"b\\u00e9')
    raw = encode(body, escape_slashes=escape_slashes)
    for cut in range(len(raw) + 1):
        audio, skeleton, _ = run(raw, [cut])
        assert (audio, skeleton) == (payload, with_empty_data(body)), cut


def test_byte_at_a_time() -> None:
    body = mimo_body(b64(SLASHY), transcript='\u2603 \\ "')
    audio, skeleton, _ = run(encode(body, escape_slashes=True), 1)
    assert (audio, skeleton) == (SLASHY, with_empty_data(body))


@given(cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=20), slashes=st.booleans())
def test_any_chunking_of_a_body(cuts: list[int], slashes: bool) -> None:
    body = mimo_body(b64(SLASHY), transcript='q"\\u')
    raw = encode(body, escape_slashes=slashes)
    audio, skeleton, _ = run(raw, sorted(c % (len(raw) + 1) for c in cuts))
    assert (audio, skeleton) == (SLASHY, with_empty_data(body))


def test_mime_line_breaks_inside_the_string_are_dropped() -> None:
    wrapped = base64.encodebytes(SLASHY).decode()  # "\n" every 76 chars: JSON-escaped as \n
    body = mimo_body(wrapped.replace("\n", "\r\n"))
    for size in (1, 3, 77, 1 << 16):
        audio, _, ex = run(encode(body, escape_slashes=True), size)
        assert audio == SLASHY
        assert ex.b64_chars == len(b64(SLASHY))


def test_raw_whitespace_inside_the_string_is_tolerated() -> None:
    text = b64(SLASHY)
    spaced = (text[:8] + " \t" + text[8:]).encode()
    raw = b'{"choices":[{"message":{"audio":{"data":"' + spaced + b'"}}}]}'
    audio, _, _ = run(raw, 5)
    assert audio == SLASHY


def blank_audio(body: dict[str, Any]) -> dict[str, Any]:
    """What the skeleton must be: the body with choices[0].message.audio.data set to ""."""
    try:
        audio = body["choices"][0]["message"]["audio"]
    except (KeyError, IndexError):
        return body
    if isinstance(audio.get("data"), str):
        audio["data"] = ""
    return body


@pytest.mark.parametrize(
    ("raw", "audio"),
    [
        # a key spelled with an escape is the same key
        (b'{"choices":[{"message":{"audio":{"d\\u0061ta":"QUJD"}}}]}', b"ABC"),
        # "data" elsewhere, and a string that looks like the target, are decoys
        (
            b'{"data":"QUJD","choices":[{"message":{"content":"\\"data\\":\\"QUJD\\"","data":"QQ==",'
            b'"audio":{"id":"x","data":"QUI="}}}]}',
            b"AB",
        ),
        # the audio of a second choice is not the audio of the first
        (
            b'{"choices":[{"message":{"audio":{"data":null}}},'
            b'{"message":{"audio":{"data":"QUJD"}}}]}',
            b"",
        ),
        # an object keyed "0" is not array index 0
        (b'{"choices":{"0":{"message":{"audio":{"data":"QUJD"}}}}}', b""),
        # "audio" one level too deep
        (b'{"choices":[{"message":{"x":{"audio":{"data":"QUJD"}}}}]}', b""),
        # nested containers at the target's depth but elsewhere, numbers, booleans
        (
            b'{"x":[[1,2.5e-3,true],{"a":[{}]}],"choices":[{"message":{"audio":{"data":"QUJD",'
            b'"n":[false,null,-1]}}}]}',
            b"ABC",
        ),
        # whitespace everywhere the JSON grammar allows it
        (b' {\n "choices" : [ { "message" : { "audio" : { "data" : "QUJD" } } } ] }\r\n', b"ABC"),
    ],
)
def test_only_the_exact_path_is_streamed(raw: bytes, audio: bytes) -> None:
    expected = blank_audio(json.loads(raw))
    for cut in range(len(raw) + 1):
        got, skeleton, ex = run(raw, [cut])
        assert (got, skeleton, ex.found) == (audio, expected, bool(audio)), cut


def test_decoys_keep_their_text_in_the_skeleton() -> None:
    raw = (
        b'{"data":"QUJD","choices":[{"message":{"content":"\\"data\\":\\"QUJD\\"",'
        b'"audio":{"data":"QUI="}}},{"message":{"audio":{"data":"QQ=="}}}]}'
    )
    audio, skeleton, _ = run(raw, 3)
    assert audio == b"AB"
    assert skeleton["data"] == "QUJD"
    assert skeleton["choices"][0]["message"]["content"] == '"data":"QUJD"'
    assert skeleton["choices"][1]["message"]["audio"]["data"] == "QQ=="


@pytest.mark.parametrize(
    ("data_json", "found"),
    [(b"null", False), (b"12", False), (b"{}", False), (b'["QUJD"]', False), (b'""', True)],
)
def test_data_that_is_no_audio_still_parses(data_json: bytes, found: bool) -> None:
    raw = b'{"choices":[{"message":{"audio":{"id":"a","data":' + data_json + b'}}}],"usage":{}}'
    audio, skeleton, ex = run(raw, 2)
    assert audio == b""
    assert ex.found is found
    assert ex.b64_chars == 0
    expected = json.loads(raw)
    assert skeleton == expected


@pytest.mark.parametrize(
    "raw",
    [
        b'{"choices":[{"message":{"audio":{"id":"a"}}}]}',
        b'{"choices":[]}',
        b'{"error":{"code":"400","message":"Param Incorrect","param":"x","type":""}}',
        b'{"type":"server_error","message":"Upstream request failed"}',
    ],
)
def test_bodies_without_audio_parse_verbatim(raw: bytes) -> None:
    audio, skeleton, ex = run(raw, 4)
    assert (audio, skeleton, ex.found) == (b"", json.loads(raw), False)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"choices":[{"message":{"audio":{"data":"QUJD","data":"QUJD"}}}]}',
        b'{"choices":[{"message":{"audio":{"data":null,"data":"QUJD"}}}]}',
        b'{"choices":[{"message":{"audio":{"data":"QUJD"},"audio":{"data":"QUJD"}}}]}',
    ],
)
def test_the_path_twice_is_an_error(raw: bytes) -> None:
    with pytest.raises(Base64StreamError, match="twice"):
        run(raw)


def test_every_truncation_of_a_body_is_an_error() -> None:
    raw = encode(mimo_body(b64(SLASHY[:30]), transcript='t\\"'), escape_slashes=True)
    for cut in range(len(raw)):
        out: list[bytes] = []
        ex = AudioDataExtractor(out.append)
        ex.feed(raw[:cut])
        with pytest.raises(Base64StreamError):
            ex.finish()


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"", "truncated"),
        (b"[1]", "not a JSON object"),
        (b"12", "not a JSON object"),
        (b'{"a" 1}', "unexpected"),
        (b'{"a":1,}', "unexpected"),
        (b'{"a":[1 2]}', "unexpected"),
        (b'{"a":1}}', "unexpected"),
        (b'{"a":1} x', "unexpected"),
        (b'{"a":1]', "unexpected"),
        (b'{"a":tru}', "not valid JSON"),
        (b'{"a":"\\x"}', "not valid JSON"),
        (b'{"\\q":1}', "bad object key"),
        (b'{"a":"\xff"}', "not valid JSON"),
        (b'\xef\xbb\xbf{"a":1}', "unexpected"),
    ],
)
def test_invalid_json_is_an_error(raw: bytes, match: str) -> None:
    with pytest.raises(Base64StreamError, match=match):
        run(raw, 1)


@pytest.mark.parametrize(
    "content",
    [
        b"QUJD\\u0041AAA",  # \u escapes cannot stand for base64
        b'QUJD\\"AAA',  # an escaped quote
        b"QUJD\\\\AAA",  # an escaped backslash
        b"QUJD\\tAAA",
        b"QUJD\\",  # a backslash right before the closing quote
        b"QU*D",  # not base64
        b"QQ==QUJD",  # data after padding
        b"QUJ",  # a truncated group
    ],
)
def test_bad_audio_strings_are_errors(content: bytes) -> None:
    raw = b'{"choices":[{"message":{"audio":{"data":"' + content + b'"}}}]}'
    for cut in range(len(raw) + 1):
        with pytest.raises(Base64StreamError):
            run(raw, [cut])


def test_skeleton_cap_counts_everything_but_the_audio() -> None:
    big_audio = bytes(3000)
    body = mimo_body(b64(big_audio))
    audio, _, _ = run(encode(body), 100, max_skeleton_bytes=400)
    assert audio == big_audio
    body = mimo_body("QUJD", transcript="x" * 500)
    with pytest.raises(Base64StreamError, match="besides the audio"):
        run(encode(body), 100, max_skeleton_bytes=400)


def test_a_custom_path() -> None:
    raw = b'{"data":"QUJD","choices":[{"message":{"audio":{"data":"QQ=="}}}]}'
    audio, skeleton, _ = run(raw, 3, path=("data",))
    assert audio == b"ABC"
    assert skeleton["data"] == ""
    assert skeleton["choices"][0]["message"]["audio"]["data"] == "QQ=="


def test_sink_errors_propagate_unchanged() -> None:
    class StopError(Exception):
        pass

    def sink(_: bytes) -> None:
        raise StopError

    ex = AudioDataExtractor(sink)
    with pytest.raises(StopError):
        ex.feed(encode(mimo_body("QUJD")))


def test_streams_a_wav_answer_into_an_audio_sink() -> None:
    samples = random.Random(7).randbytes(48_000)
    wav = wav_header(MIMO_PCM, len(samples)) + samples
    raw = encode(mimo_body(b64(wav)), escape_slashes=True)
    f = io.BytesIO()
    sink = AudioSink(f, source="wav", output="pcm")
    ex = AudioDataExtractor(sink.write)
    for i in range(0, len(raw), 4096):
        ex.feed(raw[i : i + 4096])
    ex.finish()
    info = sink.finish()
    assert f.getvalue() == samples
    assert info.duration_s == pytest.approx(1.0)


# --- encoding -----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 6, 7, 100, 196_608, 10_000_001])
def test_b64_encoded_len(n: int) -> None:
    assert b64_encoded_len(n) == len(base64.b64encode(bytes(n)))


class ShortReads(io.RawIOBase):
    """A file that hands out at most ``step`` bytes per read, like a pipe."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data, self._pos, self._step = data, 0, step

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        piece = self._data[self._pos : self._pos + min(self._step, len(buf))]
        buf[: len(piece)] = piece
        self._pos += len(piece)
        return len(piece)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 8, 9, 10, 100])
@pytest.mark.parametrize("chunk_size", [3, 9, 30])
@pytest.mark.parametrize("short_reads", [None, 1, 4])
def test_iter_base64_file(size: int, chunk_size: int, short_reads: int | None) -> None:
    data = random.Random(size).randbytes(size)
    f: Any = io.BytesIO(data) if short_reads is None else ShortReads(data, short_reads)
    pieces = list(iter_base64_file(f, chunk_size=chunk_size))
    assert b"".join(pieces) == base64.b64encode(data)
    for piece in pieces[:-1]:  # only the last piece may carry padding
        assert b"=" not in piece and len(piece) % 4 == 0
    assert all(len(p) <= b64_encoded_len(chunk_size) for p in pieces)


@pytest.mark.parametrize("chunk_size", [0, -3, 4, 65536])
def test_iter_base64_file_wants_3_aligned_chunks(chunk_size: int) -> None:
    with pytest.raises(ValueError, match="multiple of 3"):
        next(iter_base64_file(io.BytesIO(b"abc"), chunk_size=chunk_size))


async def test_aiter_base64_file(tmp_path: Path) -> None:
    data = random.Random(1).randbytes(100_001)
    path = tmp_path / "in.wav"
    path.write_bytes(data)
    pieces = [p async for p in aiter_base64_file(path, chunk_size=3 * 1024)]
    assert b"".join(pieces) == base64.b64encode(data)
    assert len(pieces) == -(-len(data) // (3 * 1024))
