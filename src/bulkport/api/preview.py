"""``POST /v1/imports/preview``: how an import would read a file, written nowhere.

A thin handler: the fields are those of an import (api/import_params.py), only
the beginning of the file is kept, and :func:`bulkport.pipeline.preview.preview`
does the work in a worker thread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from bulkport.api.import_params import UPLOAD_DOC, ImportByUrl, import_params
from bulkport.api.import_source import url_file_name
from bulkport.api.imports import ERRORS, State
from bulkport.api.jsonbody import JSON, media_type, read_json
from bulkport.api.params import whole_number
from bulkport.api.responses import JSONResponse
from bulkport.api.schemas import ImportPreview
from bulkport.api.state import AppState
from bulkport.api.upload import stored_upload
from bulkport.errors import (
    BadRequest,
    FetchFailed,
    UnprocessableFile,
    UnreadableFile,
    UnsupportedMediaType,
)
from bulkport.pipeline.decompress import open_decompressed
from bulkport.pipeline.fetch import check_url, fetch
from bulkport.pipeline.preview import DEFAULT_LIMIT, MAX_LIMIT, PREVIEW_INPUT_BYTES, preview
from bulkport.resources import get_resource

router = APIRouter(prefix="/v1/imports", tags=["imports"])
LIMIT = f"Records previewed (default {DEFAULT_LIMIT}, at most {MAX_LIMIT})"


class PreviewByUrl(ImportByUrl):
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description=LIMIT)


_DOC: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {
        **UPLOAD_DOC["requestBody"]["content"]["multipart/form-data"]["schema"],
        "properties": {
            **UPLOAD_DOC["requestBody"]["content"]["multipart/form-data"]["schema"]
            ["properties"],
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                      "default": DEFAULT_LIMIT, "description": LIMIT}}}},
    "application/json": {"schema": PreviewByUrl.model_json_schema()},
}}}


@router.post("/preview", response_model=ImportPreview, responses=ERRORS, openapi_extra=_DOC,
             summary="Preview an import: detected format, column mapping, first records")
async def preview_import(request: Request, state: State) -> JSONResponse:
    """Reads only the beginning of the file and writes nothing (no job, no rows)."""
    async with _file_head(request, state) as head:
        return JSONResponse(await run_in_threadpool(_run, state, head))


@dataclass(frozen=True)
class _Head:
    """The stored beginning of the file to preview, and how to read it."""

    key: str
    fields: dict[str, Any]
    file_name: str | None
    limit: int
    #: Whether the file goes on past what was stored.
    truncated: bool


@asynccontextmanager
async def _file_head(request: Request, state: AppState) -> AsyncIterator[_Head]:
    """The uploaded or fetched beginning of the file, deleted when the block ends."""
    ctype = media_type(request)
    if ctype == "multipart/form-data":
        async with stored_upload(request, state.uploads,
                                 max_bytes=state.settings.max_upload_bytes,
                                 keep_bytes=PREVIEW_INPUT_BYTES) as upload:  # never kept
            yield _Head(upload.stored.key, import_params(upload.fields), upload.filename,
                        _limit(upload.fields.get("limit")),
                        upload.stored.size >= PREVIEW_INPUT_BYTES)
    elif ctype == JSON:
        body = await read_json(request, PreviewByUrl,
                               '{"resource": "users", "file_url": "https://…/users.csv"}')
        fields = import_params(body.model_dump())
        url = await run_in_threadpool(check_url, body.file_url, state.settings)
        try:
            stored = await run_in_threadpool(fetch, url, state.uploads, state.settings,
                                             head_bytes=PREVIEW_INPUT_BYTES)
        except FetchFailed as exc:
            raise BadRequest(exc.message) from None
        try:
            yield _Head(stored.key, fields, url_file_name(url), body.limit,
                        stored.size >= PREVIEW_INPUT_BYTES)
        finally:
            state.uploads.delete(stored.key)
    else:
        raise UnsupportedMediaType("send multipart/form-data (file upload) or "
                                   "application/json (file_url)",
                                   allowed=["multipart/form-data", JSON])


def _limit(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_LIMIT
    limit = whole_number(value, 1, MAX_LIMIT)
    if limit is None:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return limit


def _run(state: AppState, head: _Head) -> dict[str, Any]:
    settings = state.settings
    fields = head.fields
    with state.uploads.open_read(head.key) as raw, state.conn() as conn:
        try:
            stream = open_decompressed(raw, max_bytes=settings.max_decompressed_bytes)
            return preview(raw, stream, get_resource(fields["resource"]), conn,
                           mode=fields["mode"], declared_format=fields["format"],
                           file_name=head.file_name, delimiter=fields["delimiter"],
                           encoding=fields["encoding"], column_map=fields["column_map"],
                           limit=head.limit, max_line_bytes=settings.max_line_bytes,
                           truncated=head.truncated)
        except UnreadableFile as exc:
            raise UnprocessableFile(exc.message) from None
