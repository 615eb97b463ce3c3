"""A streaming multipart/form-data reader: the file part goes straight to disk.

Starlette's ``request.form()`` spools uploads to temporary files of its own and copies them;
here the one file part of a form is written, chunk by chunk as it arrives, to the path the
caller names, so a 2 GB upload costs a few hundred kilobytes of memory and one write.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Final

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from mimoq.http.body import BodyLimits, iter_body
from mimoq.http.http_errors import HTTPError

MAX_FIELDS_BYTES: Final = 256 * 1024  # every non-file field together (metadata is ≤ 16 KiB)
MAX_FIELDS: Final = 64
_HEAD_BYTES: Final = 16


@dataclass
class SavedFile:
    """The form's file part, as written to disk."""

    filename: str
    path: Path
    size: int = 0
    head: bytes = b""  # the first bytes, to recognise the format


@dataclass
class Form:
    fields: dict[str, list[str]] = field(default_factory=dict)
    file: SavedFile | None = None


class _Collector:
    """python-multipart's callbacks: headers of each part, then its data, field or file."""

    def __init__(self, file_field: str, dest: Path) -> None:
        self.file_field = file_field
        self.dest = dest
        self.form = Form()
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._value = bytearray()
        self._out: BinaryIO | None = None
        self._fields_bytes = 0
        self.ended = False

    # -- headers --------------------------------------------------------------------------
    def on_part_begin(self) -> None:
        self._headers = {}
        self._name = None
        self._value = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name = b""
        self._header_value = b""

    def on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise _Refused(HTTPError(400, "each multipart part needs a form-data name"))
        self._name = options[b"name"].decode("utf-8", "replace")
        if b"filename" in options:
            if self._name != self.file_field or self.form.file is not None:
                raise _Refused(
                    HTTPError(
                        400,
                        f"send exactly one file, in the form field {self.file_field!r}",
                        param=self._name,
                    )
                )
            filename = options[b"filename"].decode("utf-8", "replace")
            self.dest.parent.mkdir(parents=True, exist_ok=True)
            self._out = open(self.dest, "wb")  # noqa: SIM115 (closed in on_part_end / close)
            self.form.file = SavedFile(filename=os.path.basename(filename), path=self.dest)
        elif len(self.form.fields) >= MAX_FIELDS:
            raise _Refused(HTTPError(400, f"a form may have at most {MAX_FIELDS} fields"))

    # -- data -----------------------------------------------------------------------------
    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._out is not None:
            assert self.form.file is not None
            self._out.write(chunk)
            if len(self.form.file.head) < _HEAD_BYTES:
                self.form.file.head = (self.form.file.head + chunk)[:_HEAD_BYTES]
            self.form.file.size += len(chunk)
            return
        self._fields_bytes += len(chunk)
        if self._fields_bytes > MAX_FIELDS_BYTES:
            raise _Refused(
                HTTPError(400, f"form fields may total at most {MAX_FIELDS_BYTES:,} bytes")
            )
        self._value += chunk

    def on_part_end(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        elif self._name is not None:
            self.form.fields.setdefault(self._name, []).append(
                self._value.decode("utf-8", "replace")
            )

    def on_end(self) -> None:
        self.ended = True

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


class _Refused(Exception):
    def __init__(self, error: HTTPError) -> None:
        super().__init__(error.message)
        self.error = error


async def receive_form(
    request: Request, limits: BodyLimits, *, file_field: str, dest: Path
) -> Form:
    """Read a multipart form; its one file part (named ``file_field``) is written to ``dest``.

    On any refusal the partial file is removed and an ``HTTPError`` raised.
    """
    ctype, options = parse_options_header(request.headers.get("content-type"))
    if ctype != b"multipart/form-data" or b"boundary" not in options:
        raise HTTPError(
            400,
            f"send this request as multipart/form-data with the audio in the field {file_field!r}",
            param=file_field,
        )
    collector = _Collector(file_field, dest)
    parser = MultipartParser(
        options[b"boundary"],
        {
            "on_part_begin": collector.on_part_begin,
            "on_header_field": collector.on_header_field,
            "on_header_value": collector.on_header_value,
            "on_header_end": collector.on_header_end,
            "on_headers_finished": collector.on_headers_finished,
            "on_part_data": collector.on_part_data,
            "on_part_end": collector.on_part_end,
            "on_end": collector.on_end,
        },
    )
    try:
        async for chunk in iter_body(request, limits, "MIMOQ_HTTP_MAX_UPLOAD_BYTES"):
            parser.write(chunk)
        parser.finalize()
        if not collector.ended:  # a truncated upload must not become a truncated recording
            raise _Refused(HTTPError(400, "the multipart body ended before its closing boundary"))
    except _Refused as exc:
        _discard(collector, dest)
        raise exc.error from None
    except FormParserError:
        _discard(collector, dest)
        raise HTTPError(400, "the multipart body is malformed") from None
    except BaseException:
        _discard(collector, dest)
        raise
    collector.close()
    return collector.form


def _discard(collector: _Collector, dest: Path) -> None:
    collector.close()
    with contextlib.suppress(FileNotFoundError):
        dest.unlink()
