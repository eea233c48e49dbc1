"""``/v1/imports``: create import jobs, watch them, read their errors, cancel them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from bulkport import records
from bulkport.api.errors import request_id_var
from bulkport.api.first_errors import known
from bulkport.api.import_params import UPLOAD_DOC, request_identity
from bulkport.api.import_source import import_source
from bulkport.api.params import (
    ErrorPageQuery,
    IdempotencyKey,
    ImportListQuery,
    JobId,
    list_cursor,
)
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
from bulkport.errors import BadRequest
from bulkport.jobs import service
from bulkport.jobs.status import JobKind
from bulkport.jobs.store import fingerprint
from bulkport.pipeline.rejects import csv_download
from bulkport.resources import get_resource

router = APIRouter(prefix="/v1/imports", tags=["imports"])
State = Annotated[AppState, Depends(get_state)]
ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse} for s in (400, 404, 409, 413, 415, 422, 507)
}
#: Error entries embedded in a job's status.
FIRST_ERRORS = 100


@router.post("", status_code=202, response_model=ImportJob,
             responses=ERRORS | {200: {"model": ImportJob, "description":
                                       "The job an earlier request with the same "
                                       "Idempotency-Key created"}},
             openapi_extra=UPLOAD_DOC, summary="Start an import (upload or file_url)")
async def create_import(
    request: Request, state: State,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    async with import_source(request, state) as source:
        values = {**source.fields, **source.columns,
                  "idempotency_key": scoped_idempotency_key(request, idempotency_key),
                  "request_id": request_id_var.get(),
                  "fingerprint": fingerprint(**request_identity(source.fields),
                                             **source.identity)}
        job, created = await run_in_threadpool(_create, state, values)
        source.taken(created)  # a replayed job keeps its own copy: this one is deleted
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
def list_imports(state: State, query: Annotated[ImportListQuery, Query()]) -> JSONResponse:
    status, resource, limit = query.status, query.resource, query.limit
    if resource is not None:
        get_resource(resource)
    after = list_cursor(query.cursor) if query.cursor else None
    with state.conn() as conn:
        jobs = service.list_jobs(conn, JobKind.IMPORT, status=status, resource=resource,
                                 limit=limit, after=after)
        waiting = service.waiting_for(conn, jobs)
    data = [import_job_view(j, [], waiting.get(j.id)) for j in jobs]
    nxt = encode_cursor(jobs[-1].created_at, jobs[-1].id) if len(jobs) == limit else None
    return JSONResponse({"data": data, "next_cursor": nxt})


@router.get("/{job_id}", response_model=ImportJob, responses=ERRORS, summary="Import status")
def get_import(job_id: JobId, state: State) -> JSONResponse:
    # Documents the route; GET requests are answered in front of FastAPI's stack by
    # bulkport.api.status_route, which calls import_status_response as this does.
    return import_status_response(state, job_id)


def import_status_response(state: AppState, job_id: str) -> JSONResponse:
    """The answer to ``GET /v1/imports/{job_id}`` (``job_id`` already valid_job_id'd)."""
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
def import_errors(job_id: JobId, state: State,
                  query: Annotated[ErrorPageQuery, Query()]) -> Any:
    with state.conn() as conn:
        job = service.get(conn, JobKind.IMPORT, job_id)
    if query.format == "json":
        return JSONResponse(_error_page(state, job_id, query.limit, query.cursor, query.code))
    return _download(state, job, query.format, query.code)


def _download(state: AppState, job: records.ImportJob, format: str,
              code: str | None) -> StreamingResponse:
    """Every rejected record (with ``code`` only those having it) as NDJSON or CSV."""
    name = f"import-{job.id}-errors.{format}"
    body = (_ndjson_rejects(state, job.id, code) if format == "ndjson"
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
