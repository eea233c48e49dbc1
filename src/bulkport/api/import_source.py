"""What an import reads, taken from the request and checked before a job exists.

``POST /v1/imports`` names its file one of two ways: a multipart upload (streamed
into storage by :mod:`bulkport.api.upload`) or a JSON body with a ``file_url``.
:func:`import_source` turns either into an :class:`ImportSource`: the import's
fields, the job's source columns and what identifies the file for idempotency.

An upload is checked at once, so that the client is told now rather than when
the job runs: a file that is empty, a format that neither the name nor the first
bytes tell, a CSV header that lacks a required field. The stored file belongs to
the request until :meth:`ImportSource.taken` says a job was created with it; if
the block fails in any way, or the job already existed, it is deleted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from bulkport.api.import_params import ImportByUrl, import_params
from bulkport.api.jsonbody import JSON, media_type, read_json
from bulkport.api.params import CONTROL_CHARS
from bulkport.api.state import AppState
from bulkport.api.upload import Upload, stored_upload
from bulkport.errors import BadRequest, UnreadableFile, UnsupportedMediaType
from bulkport.pipeline.decompress import open_decompressed
from bulkport.pipeline.encodings import head_as_utf8
from bulkport.pipeline.fetch import check_url
from bulkport.pipeline.formats import (
    HEADER_BLOCK_BYTES,
    delimiter_from_name,
    format_from_content,
    format_from_name,
    sniff,
)
from bulkport.pipeline.headers import check_head
from bulkport.resources import get_resource

#: Longest file name kept from an upload (characters).
MAX_FILE_NAME_CHARS = 255
_URL_EXAMPLE = '{"resource": "users", "file_url": "https://example.com/users.csv"}'


@dataclass
class ImportSource:
    """An import request, checked: what to read, and how."""

    #: The import's fields (:func:`~bulkport.api.import_params.import_params`).
    fields: dict[str, Any]
    #: The job's source columns: file_key, file_name, file_size_bytes, source_url.
    columns: dict[str, Any]
    #: What identifies the file in the idempotency fingerprint (its sha256, or its URL).
    identity: dict[str, str]
    upload: Upload | None = None

    def taken(self, created: bool) -> None:
        """Record whether a new job took the uploaded file (a replayed job has its own)."""
        if created and self.upload is not None:
            self.upload.keep()


@asynccontextmanager
async def import_source(request: Request, state: AppState) -> AsyncIterator[ImportSource]:
    """The request's source; an uploaded file not :meth:`~ImportSource.taken` is deleted."""
    ctype = media_type(request)  # media types ignore case
    if ctype == "multipart/form-data":
        # The file streams straight into storage; the fields are checked once it is read.
        async with stored_upload(request, state.uploads,
                                 max_bytes=state.settings.max_upload_bytes) as upload:
            yield await _uploaded(state, upload)
    elif ctype == JSON:
        yield await _by_url(request, state)
    else:  # refused before a byte of the body is read
        raise UnsupportedMediaType(
            "send multipart/form-data (file upload) or application/json (file_url), "
            f"not {request.headers.get('content-type', 'no Content-Type')[:100]}",
            allowed=["multipart/form-data", JSON])


async def _uploaded(state: AppState, upload: Upload) -> ImportSource:
    fields = import_params(upload.fields)
    stored = upload.stored
    if stored.size == 0:
        raise BadRequest("the uploaded file is empty")
    file_name = CONTROL_CHARS.sub("", upload.filename or "")[:MAX_FILE_NAME_CHARS] or None
    if fields["format"] is None:  # told at once, not only once the job runs
        fields["format"] = await run_in_threadpool(detect_format, state, stored.key, file_name)
    await run_in_threadpool(check_header, state, stored.key, fields, file_name)
    return ImportSource(fields, {"file_key": stored.key, "file_name": file_name,
                                 "file_size_bytes": stored.size, "source_url": None},
                        {"sha256": stored.sha256}, upload)


async def _by_url(request: Request, state: AppState) -> ImportSource:
    body = await read_json(request, ImportByUrl, _URL_EXAMPLE)
    fields = import_params(body.model_dump())
    if CONTROL_CHARS.search(body.file_url):
        raise BadRequest("file_url must not contain control characters; percent-encode them")
    url = await run_in_threadpool(check_url, body.file_url, state.settings)
    url_name = url_file_name(url)
    if fields["format"] is None:
        named = format_from_name(url_name)
        fields["format"] = named.value if named else None
    return ImportSource(fields, {"file_key": None, "file_name": url_name,
                                 "file_size_bytes": None, "source_url": url},
                        {"file_url": url})


def url_file_name(url: str) -> str | None:
    """The file name a URL gives: its path's last segment (never the authority, which
    may hold credentials, nor the query or fragment)."""
    return urlsplit(url).path.rsplit("/", 1)[-1] or None


def check_header(state: AppState, key: str, request_fields: dict[str, Any],
                 file_name: str | None) -> None:
    """422 when the CSV header (in the file's first block) lacks a required field."""
    if request_fields["format"] != "csv":
        return
    try:
        with state.uploads.open_read(key) as raw:
            head = sniff(open_decompressed(raw, max_bytes=state.settings.max_decompressed_bytes),
                         HEADER_BLOCK_BYTES)
    except (UnreadableFile, OSError, EOFError):
        return  # left to the worker, which fails the job with the reason
    check_head(head_as_utf8(head, request_fields["encoding"]),
               get_resource(request_fields["resource"]), request_fields["column_map"],
               request_fields["delimiter"] or delimiter_from_name(file_name))


def detect_format(state: AppState, key: str, file_name: str | None) -> str | None:
    """The format the name or the first bytes tell (as the worker will read it), else None.

    A file that cannot be read (a damaged gzip) is left to the worker, which fails
    the job with a readable reason.
    """
    named = format_from_name(file_name)
    if named is not None:
        return named.value
    try:
        with state.uploads.open_read(key) as raw:
            head = sniff(open_decompressed(raw, max_bytes=state.settings.max_decompressed_bytes))
    except (UnreadableFile, OSError, EOFError):
        return None
    return format_from_content(head).value if head.strip() else None
