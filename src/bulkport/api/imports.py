"""``/v1/imports``: create import jobs, watch them, read their errors, cancel them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from bulkport import records
from bulkport.api.errors import request_id_var
from bulkport.api.first_errors import known
from bulkport.api.import_params import (
    UPLOAD_DOC,
    ImportByUrl,
    check_header,
    detect_format,
    import_params,
    request_identity,
)
from bulkport.api.jsonbody import JSON, media_type, read_json
from bulkport.api.params import IdempotencyKey, JobId, list_cursor
from bulkport.api.responses import JSONResponse
from bulkport.api.schemas import (
    ErrorPage,
    ErrorResponse,
    ImportJob,
    ImportJobPage,
    decode_cursor,
    encode_cursor,
    flatten_errors,
    import_job_view,
)
from bulkport.api.security import scoped_idempotency_key
from bulkport.api.state import AppState, get_state
from bulkport.api.upload import receive_upload
from bulkport.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from bulkport.jobs import service
from bulkport.jobs.status import JobKind, JobStatus
from bulkport.jobs.store import fingerprint
from bulkport.pipeline.fetch import check_url
from bulkport.pipeline.formats import (
    format_from_name,
)
from bulkport.pipeline.rejects import csv_download
from bulkport.resources import get_resource
from bulkport.storage import StoredFile

router = APIRouter(prefix="/v1/imports", tags=["imports"])
State = Annotated[AppState, Depends(get_state)]
ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse} for s in (400, 404, 409, 413, 415, 422, 507)
}
#: Error entries embedded in a job's status.
FIRST_ERRORS = 100
#: C0 controls and DEL: PostgreSQL text refuses NUL, and none belongs in a URL or file name.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Longest file name kept from an upload (characters).
MAX_FILE_NAME_CHARS = 255
_URL_EXAMPLE = '{"resource": "users", "file_url": "https://example.com/users.csv"}'




@router.post("", status_code=202, response_model=ImportJob,
             responses=ERRORS | {200: {"model": ImportJob, "description":
                                       "The job an earlier request with the same "
                                       "Idempotency-Key created"}},
             openapi_extra=UPLOAD_DOC, summary="Start an import (upload or file_url)")
async def create_import(
    request: Request, state: State,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    settings = state.settings
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > settings.max_upload_bytes + 64 * 1024:
        raise PayloadTooLarge(
            f"the upload is larger than the limit of {settings.max_upload_bytes} bytes",
            limit_bytes=settings.max_upload_bytes)
    ctype = media_type(request)  # media types ignore case
    stored: StoredFile | None = None
    if ctype == "multipart/form-data":
        # The file streams straight into storage; the fields are checked once it is read.
        upload = await receive_upload(request, state.uploads,
                                      max_bytes=settings.max_upload_bytes)
        stored = upload.stored
        try:
            request_fields = import_params(upload.fields)
        except Exception:
            state.uploads.delete(stored.key)
            raise
        if stored.size == 0:
            state.uploads.delete(stored.key)
            raise BadRequest("the uploaded file is empty")
        file_name = _CONTROL.sub("", upload.filename or "")[:MAX_FILE_NAME_CHARS] or None
        try:
            if request_fields["format"] is None:  # told at once, not only once the job runs
                request_fields["format"] = await run_in_threadpool(
                    detect_format, state, stored.key, file_name)
            await run_in_threadpool(check_header, state, stored.key, request_fields, file_name)
        except Exception:
            state.uploads.delete(stored.key)
            raise
        source = {"file_key": stored.key, "file_name": file_name,
                  "file_size_bytes": stored.size, "source_url": None}
        identity = {"sha256": stored.sha256}
    elif ctype == JSON:
        body = await read_json(request, ImportByUrl, _URL_EXAMPLE)
        request_fields = import_params(body.model_dump())
        if _CONTROL.search(body.file_url):
            raise BadRequest("file_url must not contain control characters; percent-encode them")
        url = await run_in_threadpool(check_url, body.file_url, settings)
        # The name comes from the path only: the authority may hold credentials.
        url_name = urlsplit(url).path.rsplit("/", 1)[-1] or None
        source = {"file_key": None, "file_name": url_name, "file_size_bytes": None,
                  "source_url": url}
        if request_fields["format"] is None:
            named = format_from_name(url_name)
            request_fields["format"] = named.value if named else None
        identity = {"file_url": url}
    else:  # refused before a byte of the body is read
        raise UnsupportedMediaType(
            "send multipart/form-data (file upload) or application/json (file_url), "
            f"not {request.headers.get('content-type', 'no Content-Type')[:100]}",
            allowed=["multipart/form-data", JSON])
    values = {**request_fields, **source,
              "idempotency_key": scoped_idempotency_key(request, idempotency_key),
              "request_id": request_id_var.get(),
              "fingerprint": fingerprint(**request_identity(request_fields), **identity)}
    try:
        job, created = await run_in_threadpool(_create, state, values)
    except Exception:
        if stored is not None:  # e.g. 409 idempotency_conflict: nothing will read it
            state.uploads.delete(stored.key)
        raise
    if not created and stored is not None:
        state.uploads.delete(stored.key)  # the replayed job keeps its own copy
    view = await run_in_threadpool(_view, state, job)
    return JSONResponse(view, status_code=202 if created else 200,
                          headers={"Location": f"/v1/imports/{job.id}"})


def _create(state: AppState, values: dict[str, Any]) -> tuple[records.ImportJob, bool]:
    with state.conn() as conn:
        return service.create(conn, JobKind.IMPORT, values)


def _view(state: AppState, job: records.ImportJob) -> dict[str, Any]:
    with state.conn() as conn:
        rows = service.import_errors(conn, job.id, after_row=0, limit=FIRST_ERRORS)
        waiting = service.waiting_for(conn, [job])
    return import_job_view(job, flatten_errors(rows)[:FIRST_ERRORS], waiting.get(job.id))


@router.get("", response_model=ImportJobPage, responses=ERRORS, summary="List import jobs")
def list_imports(
    state: State,
    status: JobStatus | None = None,
    resource: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> JSONResponse:
    if resource is not None:
        get_resource(resource)
    after = list_cursor(cursor) if cursor else None
    with state.conn() as conn:
        jobs = service.list_jobs(conn, JobKind.IMPORT, status=status, resource=resource,
                                 limit=limit, after=after)
        waiting = service.waiting_for(conn, jobs)
    data = [import_job_view(j, [], waiting.get(j.id)) for j in jobs]
    nxt = encode_cursor(jobs[-1].created_at, jobs[-1].id) if len(jobs) == limit else None
    return JSONResponse({"data": data, "next_cursor": nxt})


@router.get("/{job_id}", response_model=ImportJob, responses=ERRORS, summary="Import status")
def get_import(job_id: JobId, state: State) -> JSONResponse:
    held = state.first_errors.get(job_id)
    with state.conn() as conn:  # one query: the job, and its first errors unless held
        job, first = service.import_status(conn, job_id, first_errors=FIRST_ERRORS,
                                           known=known(held))
        waiting = service.waiting_for(conn, [job])  # no query unless the job is pending
    errors = state.first_errors.resolve(job, first, held, flatten_errors, FIRST_ERRORS)
    return JSONResponse(import_job_view(job, errors, waiting.get(job_id)))


@router.post("/{job_id}/cancel", response_model=ImportJob, responses=ERRORS,
             summary="Cancel a pending or processing import")
def cancel_import(job_id: JobId, state: State) -> JSONResponse:
    """The reply shows the job as it stays: the batch in flight finishes first."""
    job = service.cancel(state.conn, JobKind.IMPORT, job_id)
    with state.conn() as conn:
        rows = service.import_errors(conn, job_id, after_row=0, limit=FIRST_ERRORS)
    return JSONResponse(import_job_view(job, flatten_errors(rows)[:FIRST_ERRORS]))


@router.get("/{job_id}/errors", response_model=ErrorPage,
            responses=ERRORS | {200: {"content": {"application/x-ndjson": {},
                                                  "text/csv": {}}}},
            summary="Every error of an import (JSON pages, or an NDJSON/CSV download)")
def import_errors(
    job_id: JobId, state: State,
    format: Annotated[str, Query(pattern="^(json|ndjson|csv)$")] = "json",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
    code: Annotated[str | None, Query(
        max_length=64, pattern="^[a-z0-9_]+$",
        description="Only errors of this code (e.g. invalid_email_format); with csv/ndjson, "
                    "only the records having it")] = None,
) -> Any:
    with state.conn() as conn:
        job = service.get(conn, JobKind.IMPORT, job_id)
    if format == "json":
        return JSONResponse(_error_page(state, job_id, limit, cursor, code))
    name = f"import-{job_id}-errors.{format}"
    body = (_ndjson_rejects(state, job_id, code) if format == "ndjson"
            else _csv_rejects(state, job, code))
    media = "application/x-ndjson" if format == "ndjson" else "text/csv; charset=utf-8"
    return StreamingResponse(body, media_type=media,
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _error_page(state: AppState, job_id: str, limit: int, cursor: str | None,
                code: str | None = None) -> dict[str, Any]:
    """``limit`` error entries; the cursor is the (row, index) of the next entry.

    A record with several problems may straddle two pages, so that ``limit`` always
    counts entries (the items of ``data``), never records.
    """
    row, skip = decode_cursor(cursor, 2) if cursor else (1, 0)
    if not (isinstance(row, int) and isinstance(skip, int)):
        raise BadRequest("invalid cursor; pass the next_cursor of a previous page")
    # Every stored record has at least one entry: limit + 1 records always hold the
    # limit + 1 entries needed to know whether another page exists.
    with state.conn() as conn:
        rows = service.import_errors(conn, job_id, after_row=row - 1, limit=limit + 1,
                                     code=code)
    entries = [(r["row"], i, e) for r in rows for i, e in enumerate(r["errors"])
               if (r["row"] != row or i >= skip) and (code is None or e["code"] == code)]
    nxt = encode_cursor(entries[limit][0], entries[limit][1]) if len(entries) > limit else None
    return {"data": [{"row": r, **e} for r, _, e in entries[:limit]], "next_cursor": nxt}


#: Rejected records read per query while streaming a download.
DOWNLOAD_PAGE = 1000


def _rejects(state: AppState, job_id: str, code: str | None) -> Iterator[dict[str, Any]]:
    after = 0
    while True:
        with state.conn() as conn:
            rows = service.import_errors(conn, job_id, after_row=after, limit=DOWNLOAD_PAGE,
                                         code=code)
        yield from rows
        if len(rows) < DOWNLOAD_PAGE:
            return
        after = rows[-1]["row"]


def _ndjson_rejects(state: AppState, job_id: str, code: str | None) -> Iterator[bytes]:
    for r in _rejects(state, job_id, code):
        yield orjson.dumps({"row": r["row"], "record": r["record"], "errors": r["errors"]}) + b"\n"


def _csv_rejects(state: AppState, job: records.ImportJob, code: str | None
                 ) -> Iterator[bytes]:
    return csv_download(job, _rejects(state, job.id, code))
