"""PURE: incremental base64 and a streaming extractor for the audio string of a MiMo response."""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Final

import pybase64

#: Where MiMo puts the audio of a non-streaming TTS answer.
AUDIO_DATA_PATH: Final[tuple[str | int, ...]] = ("choices", 0, "message", "audio", "data")

#: 3-byte aligned, so every chunk but the last encodes without padding (196,608 bytes in).
DEFAULT_ENCODE_CHUNK: Final = 3 * 64 * 1024

# MIME-style base64 wraps lines; those bytes (and stray spaces) carry no data.
_WHITESPACE: Final = b" \t\r\n"
_PAD: Final = 0x3D  # "="
_BACKSLASH: Final = 0x5C
_SLASH: Final = 0x2F
# Inside the audio string the only escapes that can stand for base64 text or line breaks.
_DROPPED_ESCAPES: Final = frozenset(b"nr")
# A backslash not starting \/, \n or \r, or a lone one at the end: nothing base64 can contain.
_BAD_ESCAPE: Final = re.compile(rb"\\(?:[^/nr]|\Z)")
_LITERAL_RUN: Final = re.compile(rb"[-+.0-9A-Za-z]*")
_LITERAL_START: Final = frozenset(b"-0123456789tfn")
_JSON_WHITESPACE: Final = frozenset(b" \t\r\n")


class Base64StreamError(ValueError):
    """Invalid base64, invalid or truncated JSON, or a body the extractor will not accept."""


class Base64Decoder:
    """Incremental base64 decoder: feed any-sized pieces, get decoded bytes out.

    Whitespace (MIME line breaks) is skipped; anything else outside the standard alphabet is
    an error, and so is data after ``=`` padding. Padding is required: a final group of fewer
    than 4 characters fails in :meth:`finish`, as it does for ``base64.b64decode``.
    """

    def __init__(self) -> None:
        self.chars = 0  #: base64 characters consumed so far (whitespace not counted)
        self._tail = b""  # at most 3 characters waiting for the rest of their group
        self._padded = False

    def feed(self, data: bytes) -> bytes:
        """Decode the longest 4-character-aligned prefix of what was fed; keep the rest."""
        # Four memchr scans are ~100x cheaper than translate() when there is nothing to strip.
        if b"\n" in data or b"\r" in data or b" " in data or b"\t" in data:
            data = data.translate(None, _WHITESPACE)
        if not data:
            return b""
        if self._padded:
            raise Base64StreamError(f"base64 goes on after '=' padding (character {self.chars})")
        start = self.chars
        self.chars += len(data)
        buf = self._tail + data if self._tail else data
        cut = len(buf) - (len(buf) & 3)
        self._tail = buf[cut:]
        if not cut:
            return b""
        group = buf[:cut] if self._tail else buf
        try:
            out: bytes = pybase64.b64decode(group, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise Base64StreamError(
                f"invalid base64 in characters {start - len(buf) + len(data)} to {self.chars}"
            ) from exc
        # validate=True already refuses '=' before the last group; remember it for later feeds.
        self._padded = group[-1] == _PAD
        return out

    def finish(self) -> bytes:
        """Decode what is left; raises :class:`Base64StreamError` on an incomplete last group."""
        if self._tail:
            raise Base64StreamError(
                f"base64 ends with {len(self._tail)} character(s) short of a 4-character group "
                "(truncated, or '=' padding missing)"
            )
        return b""


# --- the JSON scanner -------------------------------------------------------------------------
# Parser states, kept as plain ints: they are compared once per structural byte.
_VALUE = 0  # a value must come next (top level, after ':' or after ',' in an array)
_VALUE_OR_CLOSE = 1  # just after '['
_KEY_OR_CLOSE = 2  # just after '{'
_KEY = 3  # after ',' in an object
_COLON = 4  # after a key
_AFTER_VALUE = 5  # ',' or a closing bracket must come next
_STRING = 6  # inside a string value we keep
_KEY_STRING = 7  # inside an object key
_LITERAL = 8  # inside a number, true, false or null
_TARGET = 9  # inside the audio string: its content goes to the decoder, not the skeleton
_DONE = 10  # the top-level value is complete: only whitespace may follow

_EXPECTS_VALUE: Final = frozenset({_VALUE, _VALUE_OR_CLOSE})
_EXPECTS_KEY: Final = frozenset({_KEY_OR_CLOSE, _KEY})


def _odd_backslashes_before(buf: bytes, end: int, start: int) -> bool:
    """Whether an odd run of backslashes ends at ``end`` (so the byte at ``end`` is escaped)."""
    i = end
    while i > start and buf[i - 1] == _BACKSLASH:
        i -= 1
    return bool((end - i) & 1)


class AudioDataExtractor:
    """Scans a chat-completions JSON body fed in chunks and streams out its audio.

    The base64 string at ``path`` is decoded as it arrives and handed to ``sink`` piece by
    piece; everything else (the "skeleton", with that string replaced by ``""``) is kept and
    parsed by :meth:`finish`. Memory stays at one chunk plus the skeleton, whatever the audio
    size. Inside the audio string, ``\\/`` stands for ``/`` and ``\\n``/``\\r`` are dropped as
    line breaks; any other escape is an error. If the value at ``path`` is not a string (say
    ``null``), :attr:`found` stays False and the skeleton still parses.
    """

    def __init__(
        self,
        sink: Callable[[bytes], None],
        *,
        path: tuple[str | int, ...] = AUDIO_DATA_PATH,
        max_skeleton_bytes: int = 1 << 20,
    ) -> None:
        self._sink = sink
        self._path = path
        self._max_skeleton = max_skeleton_bytes
        self._decoder = Base64Decoder()
        self._skeleton = bytearray()
        self._state = _VALUE
        # One entry per open container: the current key (None before the first) or index.
        self._keys: list[str | int | None] = []
        self._in_array: list[bool] = []
        self._key_raw = bytearray()
        self._escape = False  # the previous chunk ended on a backslash inside a string
        self._target_seen = False
        self._found = False
        self._offset = 0  # body bytes fed before the current chunk, for error messages

    @property
    def found(self) -> bool:
        """Whether the value at ``path`` was a JSON string (possibly empty)."""
        return self._found

    @property
    def b64_chars(self) -> int:
        """How many base64 characters the audio string held (escapes and whitespace excluded)."""
        return self._decoder.chars

    def feed(self, chunk: bytes) -> None:
        """Scan the next piece of the body; decoded audio in it goes to the sink at once."""
        n = len(chunk)
        pos = 0
        copied = 0  # chunk[:copied] is already in the skeleton (or was audio)
        while pos < n:
            state = self._state
            if state == _TARGET:
                pos = self._scan_target(chunk, pos)
                if pos < n:  # the closing quote: it and what follows belong to the skeleton
                    self._emit(self._decoder.finish())
                    copied = pos
                    pos += 1
                    self._end_value()
            elif state in (_STRING, _KEY_STRING):
                end = self._scan_string(chunk, pos)
                stop = n if end < 0 else end + 1
                if state == _KEY_STRING:
                    self._key_raw += chunk[pos:stop]
                pos = stop
                if end >= 0:
                    if state == _KEY_STRING:
                        self._set_key()
                    else:
                        self._end_value()
            elif state == _LITERAL:
                match = _LITERAL_RUN.match(chunk, pos)
                pos = match.end() if match else pos
                if pos < n:  # a delimiter: the literal is complete (json.loads checks its text)
                    self._end_value()
            else:
                pos = self._structural(chunk, pos)
                if self._state == _TARGET:  # entered the audio string: flush up to its quote
                    self._keep(chunk[copied:pos])
        if self._state != _TARGET:
            self._keep(chunk[copied:] if copied else chunk)
        self._offset += n

    def finish(self) -> dict[str, Any]:
        """Parse the skeleton: the whole body with the audio string replaced by ``""``."""
        if self._state == _LITERAL and not self._keys:
            self._state = _DONE
        if self._state != _DONE:
            raise Base64StreamError(f"the JSON body is truncated after {self._offset} bytes")
        try:
            body = json.loads(self._skeleton)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise Base64StreamError(f"the response body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise Base64StreamError("the response body is not a JSON object")
        return body

    # --- pieces of the scanner ------------------------------------------------------------

    def _structural(self, chunk: bytes, pos: int) -> int:
        """Handle one byte outside any string; returns the next position."""
        c = chunk[pos]
        state = self._state
        if c in _JSON_WHITESPACE:
            return pos + 1
        if c == 0x22:  # '"'
            if state in _EXPECTS_KEY:
                self._state = _KEY_STRING
                self._key_raw = bytearray(b'"')
            elif state in _EXPECTS_VALUE:
                if self._start_value():
                    self._found = True
                    self._state = _TARGET
                else:
                    self._state = _STRING
            else:
                self._unexpected(chunk, pos)
            return pos + 1
        if c == 0x7B or c == 0x5B:  # '{' or '['
            if state not in _EXPECTS_VALUE:
                self._unexpected(chunk, pos)
            self._start_value()
            is_array = c == 0x5B
            self._keys.append(0 if is_array else None)
            self._in_array.append(is_array)
            self._state = _VALUE_OR_CLOSE if is_array else _KEY_OR_CLOSE
        elif c == 0x7D or c == 0x5D:  # '}' or ']'
            is_array = c == 0x5D
            opened = _VALUE_OR_CLOSE if is_array else _KEY_OR_CLOSE
            closable = state in (opened, _AFTER_VALUE)
            if not self._in_array or self._in_array[-1] != is_array or not closable:
                self._unexpected(chunk, pos)
            self._keys.pop()
            self._in_array.pop()
            self._end_value()
        elif c == 0x2C:  # ','
            if state != _AFTER_VALUE or not self._keys:
                self._unexpected(chunk, pos)
            if self._in_array[-1]:
                index = self._keys[-1]
                assert isinstance(index, int)  # array frames always hold an index
                self._keys[-1] = index + 1
                self._state = _VALUE
            else:
                self._state = _KEY
        elif c == 0x3A:  # ':'
            if state != _COLON:
                self._unexpected(chunk, pos)
            self._state = _VALUE
        elif c in _LITERAL_START and state in _EXPECTS_VALUE:
            self._start_value()
            self._state = _LITERAL
        else:
            self._unexpected(chunk, pos)
        return pos + 1

    def _unexpected(self, chunk: bytes, pos: int) -> None:
        raise Base64StreamError(
            f"invalid JSON: unexpected {chunk[pos : pos + 1]!r} at byte {self._offset + pos}"
        )

    def _start_value(self) -> bool:
        """Note that a value starts here; returns whether it sits at the audio path."""
        if len(self._keys) != len(self._path):
            return False
        # Keys are str and indices int, so an object keyed "0" never matches index 0.
        if any(want != key for key, want in zip(self._keys, self._path, strict=True)):
            return False
        if self._target_seen:
            raise Base64StreamError(f"the response body has {self._path_text()} twice")
        self._target_seen = True
        return True

    def _end_value(self) -> None:
        self._state = _AFTER_VALUE if self._keys else _DONE

    def _set_key(self) -> None:
        try:
            key = json.loads(self._key_raw)
        except ValueError:
            raise Base64StreamError(
                f"invalid JSON: bad object key before byte {self._offset}"
            ) from None
        self._keys[-1] = key
        self._state = _COLON

    def _path_text(self) -> str:
        return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in self._path)

    def _scan_string(self, chunk: bytes, pos: int) -> int:
        """Find the closing quote of a kept string from ``pos``; -1 if it is not in this chunk."""
        if self._escape:  # the previous chunk ended on a backslash: this byte is escaped
            self._escape = False
            pos += 1
        start = pos
        while True:
            quote = chunk.find(b'"', pos)
            if quote < 0:
                self._escape = _odd_backslashes_before(chunk, len(chunk), start)
                return -1
            if not _odd_backslashes_before(chunk, quote, start):
                return quote
            pos = quote + 1

    def _scan_target(self, chunk: bytes, pos: int) -> int:
        """Decode the audio string from ``pos``; returns its closing quote's index or len(chunk)."""
        if self._escape:  # an escape split across chunks: its letter is the first byte here
            self._escape = False
            letter = chunk[pos]
            if letter == _SLASH:
                self._emit(self._decoder.feed(b"/"))
            elif letter not in _DROPPED_ESCAPES:
                self._bad_escape(pos)
            pos += 1
        # One find per chunk: a quote inside base64 can only be the closing one (an escaped
        # quote is refused below), so megabytes are crossed at memchr speed.
        quote = chunk.find(b'"', pos)
        end = len(chunk) if quote < 0 else quote
        piece = chunk[pos:end]
        if b"\\" in piece:
            if piece[-1] == _BACKSLASH:
                if quote >= 0:  # \" or \\ just before the quote: neither can be base64
                    self._bad_escape(end)
                self._escape = True
                piece = piece[:-1]
            unslashed = piece.translate(None, b"\\")
            if piece.count(b"\\/") == len(piece) - len(unslashed):
                piece = unslashed  # every backslash starts a \/ (PHP-style encoders): fast path
            else:
                bad = _BAD_ESCAPE.search(piece)
                if bad:
                    self._bad_escape(pos + bad.start())
                # Safe to replace blindly: no escaped backslash got through, so every
                # backslash starts exactly one of these three escapes.
                piece = piece.replace(b"\\/", b"/").replace(b"\\n", b"").replace(b"\\r", b"")
        self._emit(self._decoder.feed(piece))
        return end

    def _bad_escape(self, pos: int) -> None:
        raise Base64StreamError(
            f"invalid escape in the base64 audio at byte {self._offset + pos}: "
            "only \\/, \\n and \\r can appear there"
        )

    def _emit(self, audio: bytes) -> None:
        if audio:
            self._sink(audio)

    def _keep(self, piece: bytes) -> None:
        self._skeleton += piece
        if len(self._skeleton) > self._max_skeleton:
            raise Base64StreamError(
                f"the response body holds more than {self._max_skeleton} bytes besides the audio"
            )


# --- encoding, for streamed request bodies -------------------------------------------------


def b64_encoded_len(n: int) -> int:
    """Length of the padded base64 text of ``n`` bytes: ``4 * ceil(n / 3)``."""
    return 4 * -(-n // 3)


def iter_base64_file(f: BinaryIO, *, chunk_size: int = DEFAULT_ENCODE_CHUNK) -> Iterator[bytes]:
    """Yield the base64 of ``f`` from its current position, a chunk at a time, no newlines."""
    if chunk_size <= 0 or chunk_size % 3:
        raise ValueError(f"chunk_size must be a positive multiple of 3, not {chunk_size}")
    while True:
        buf = f.read(chunk_size)
        # A short read (a pipe, a raw file) is not the end: top up, so that every piece but
        # the last is 3-byte aligned and encodes without padding.
        while buf and len(buf) < chunk_size:
            more = f.read(chunk_size - len(buf))
            if not more:
                break
            buf += more
        if not buf:
            return
        yield pybase64.b64encode(buf)


async def aiter_base64_file(
    path: Path, *, chunk_size: int = DEFAULT_ENCODE_CHUNK
) -> AsyncIterator[bytes]:
    """The base64 of the file at ``path``, for an httpx streamed request body.

    Reads happen inline: a 192 KiB read from a local file costs tens of microseconds, less
    than handing it to a thread, and httpx awaits the socket between chunks anyway.
    """
    with path.open("rb") as f:
        for piece in iter_base64_file(f, chunk_size=chunk_size):
            yield piece
