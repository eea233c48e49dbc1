"""Streaming multipart uploads: the file part goes straight to storage as it arrives.

``request.form()`` first spools an upload to a temporary file and the handler then
copies it into storage: a 2 GB upload is written twice, half of it to ``/tmp``.
:func:`receive_upload` feeds the request body to python-multipart's push parser
and hands the file part's bytes to :meth:`Storage.save_async` chunk by chunk,
so the upload is written once, hashed on the way, and held to the size limit
while it streams (the stored file is removed if anything fails).

Form fields (small text parts) may come before or after the file; at most
:data:`MAX_FIELDS` of at most :data:`MAX_FIELD_BYTES` each, each given once, and
one file part. The envelope is checked before the body is read: a boundary of
at most :data:`MAX_BOUNDARY_CHARS` characters and a ``charset`` that is a text
encoding, else a 400.

:func:`stored_upload` is the way handlers take an upload: a context manager that
deletes the stored file when the block fails in any way (a bad field, an empty
file, a refused header, a job that could not be created, a client gone) and
also when it succeeds without :meth:`Upload.keep` (a preview, a replayed job).
"""

from __future__ import annotations

import codecs
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.requests import Request

from bulkport.errors import BadRequest
from bulkport.storage import Storage, StoredFile

#: Text fields accepted next to the file (resource, format, mode, dry_run, …).
MAX_FIELDS = 10
#: Longest text field (bytes): every valid value is a few words.
MAX_FIELD_BYTES = 64 * 1024
#: Longest multipart boundary (RFC 2046).
MAX_BOUNDARY_CHARS = 70


@dataclass
class Upload:
    """What a multipart request carried: its text fields and the stored file."""

    fields: dict[str, str]
    stored: StoredFile
    filename: str | None
    #: Whether the stored file outlives the request (see :func:`stored_upload`).
    kept: bool = False

    def keep(self) -> None:
        """Keep the stored file when the block ends: a job now owns it."""
        self.kept = True


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    is_file: bool = False
    data: bytearray = field(default_factory=bytearray)


class _Parts:
    """python-multipart callbacks: collects fields, queues the file part's bytes."""

    def __init__(self, file_field: str, charset: str) -> None:
        self.file_field = file_field
        self.charset = charset
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.files = 0
        self.file_bytes: deque[bytes] = deque()
        #: Bytes of the file part still to keep (None: all of it).
        self.file_room: int | None = None
        self.part = _Part()
        self.header_name = bytearray()
        self.header_value = bytearray()
        self.disposition = b""

    def callbacks(self) -> dict[str, object]:
        return {"on_part_begin": self.on_part_begin, "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished}

    def decode(self, raw: bytes) -> str:
        try:
            return raw.decode(self.charset, errors="replace")
        except (UnicodeError, LookupError):  # a codec that refuses some input whatever
            raise BadRequest(f"a form field cannot be read as {self.charset}; "
                             "send the fields in utf-8") from None

    def on_part_begin(self) -> None:
        self.part = _Part()
        self.disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if bytes(self.header_name).lower() == b"content-disposition":
            self.disposition = bytes(self.header_value)
        self.header_name.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        if b"name" not in options:
            raise BadRequest("every multipart part needs a Content-Disposition header with "
                             "a name")
        self.part.name = self.decode(options[b"name"])
        if b"filename" in options:
            self.files += 1
            if self.part.name != self.file_field or self.files > 1:
                raise BadRequest("too many files, or a file in another part: send exactly one "
                                 f"file, in the '{self.file_field}' part")
            self.part.is_file = True
            self.filename = self.decode(options[b"filename"])
        elif len(self.fields) >= MAX_FIELDS:
            raise BadRequest(f"too many form fields; at most {MAX_FIELDS} are accepted")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.part.is_file:
            room = self.file_room
            if room is None:
                self.file_bytes.append(data[start:end])
            elif room > 0:  # only the beginning is kept: the rest is not even copied
                end = min(end, start + room)
                self.file_bytes.append(data[start:end])
                self.file_room = room - (end - start)
            return
        self.part.data += data[start:end]
        if len(self.part.data) > MAX_FIELD_BYTES:
            raise BadRequest(f"the form field '{self.part.name}' is longer than "
                             f"{MAX_FIELD_BYTES} bytes")

    def on_part_end(self) -> None:
        if self.part.is_file:
            return
        if self.part.name in self.fields:
            # Which of two values was meant cannot be known: taking either is a guess.
            raise BadRequest(f"the form field '{self.part.name}' is given twice; send it once")
        self.fields[self.part.name] = self.decode(bytes(self.part.data))


def _charset(raw: bytes | None) -> str:
    """The text encoding of the form fields: a real text codec, else a 400.

    ``codecs`` also knows bytes-to-bytes codecs (base64, zlib, hex, rot13) and text
    codecs that cannot replace bad bytes (idna, undefined): decoding a field with
    those raises, so they are refused here, before the body is read.
    """
    if raw is None:
        return "utf-8"
    name = raw.decode("latin-1")
    try:
        codec = codecs.lookup(name).name
        b"\xff".decode(codec, errors="replace")
    except (LookupError, UnicodeError, ValueError):
        raise BadRequest(f"unsupported charset {name[:50]!r} in the multipart Content-Type; "
                         "send utf-8 (the default) or another text encoding") from None
    return codec


async def receive_upload(request: Request, storage: Storage, *, max_bytes: int,
                         file_field: str = "file", keep_bytes: int | None = None) -> Upload:
    """Parse a multipart request, storing its file part; 400 when there is no file part.

    With ``keep_bytes``, only the file's first ``keep_bytes`` bytes are stored (the
    rest of the body is read and dropped): a preview needs only the beginning.
    """
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise BadRequest("multipart/form-data needs a boundary parameter in Content-Type")
    if len(boundary) > MAX_BOUNDARY_CHARS:
        raise BadRequest(f"the multipart boundary is {len(boundary)} characters long; "
                         f"RFC 2046 allows 1 to {MAX_BOUNDARY_CHARS}")
    parts = _Parts(file_field, _charset(params.get(b"charset")))
    try:
        parser = MultipartParser(boundary, parts.callbacks())  # type: ignore[arg-type]
    except FormParserError as exc:
        raise BadRequest(f"the multipart Content-Type is malformed: {exc}") from None

    parts.file_room = keep_bytes
    async def file_chunks() -> AsyncIterator[bytes]:
        try:
            async for chunk in request.stream():
                parser.write(chunk)
                while parts.file_bytes:
                    yield parts.file_bytes.popleft()
            parser.finalize()
        except FormParserError as exc:
            raise BadRequest(f"the multipart body is malformed: {exc}") from None
        if parser.state != MultipartState.END:  # finalize() does not check it
            raise BadRequest("the multipart body ends before its closing boundary; "
                             "the upload was cut short")
        while parts.file_bytes:
            yield parts.file_bytes.popleft()

    stored = await storage.save_async(file_chunks(), max_bytes=max_bytes)
    if parts.files == 0:
        storage.delete(stored.key)
        raise BadRequest(f"a multipart upload needs a '{file_field}' part holding the file")
    return Upload(parts.fields, stored, parts.filename)


@asynccontextmanager
async def stored_upload(request: Request, storage: Storage, *, max_bytes: int,
                        file_field: str = "file", keep_bytes: int | None = None
                        ) -> AsyncIterator[Upload]:
    """:func:`receive_upload`, with the stored file deleted when the block ends, however
    it ends (an exception, a cancelled request), unless :meth:`Upload.keep` was called.

    ``keep`` is called the moment a job takes the file: from then on the job owns it,
    so a failure later in the block (shaping the response) must not delete it.
    """
    upload = await receive_upload(request, storage, max_bytes=max_bytes, file_field=file_field,
                                  keep_bytes=keep_bytes)
    try:
        yield upload
    finally:
        if not upload.kept:
            storage.delete(upload.stored.key)
