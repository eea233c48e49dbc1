"""``/v1/exports``: stream an export, or run it as a job and download its file.

``GET /v1/exports?resource=…`` streams; ``GET /v1/exports`` without ``resource``
lists export jobs. The pipelines do the work (:mod:`bulkport.pipeline.export`,
:mod:`bulkport.pipeline.export_job`); handlers parse, call and shape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from psycopg.types.json import Jsonb
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from bulkport.api.errors import request_id_var
from bulkport.api.export_params import ExportQuery
from bulkport.api.export_stream import (
    STREAM_WAIT_SECONDS,
    CopyStreamResponse,
    ExportState,
    accepts_gzip,
    helper_connections,
)
from bulkport.api.jsonbody import read_json
from bulkport.api.params import IdempotencyKey, JobId
from bulkport.api.record_schemas import export_content
from bulkport.api.responses import JSONResponse
from bulkport.api.schemas import ErrorResponse, encode_cursor
from bulkport.api.security import scoped_idempotency_key
from bulkport.api.state import AppState, get_state
from bulkport.db import open_stream_pool
from bulkport.errors import Conflict, ExportExpired, TooManyExports
from bulkport.jobs import service
from bulkport.jobs.status import JobKind, JobStatus
from bulkport.jobs.store import fingerprint
from bulkport.pipeline.export.bridge import CopyStream
from bulkport.pipeline.export_spec import MEDIA_TYPES, parse_spec
from bulkport.records import ExportJob as ExportRecord
from bulkport.storage import export_storage


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: AppState = app.state.bulkport
    settings = state.settings
    streams = open_stream_pool(state.url, settings.export_streams)
    lanes = None
    if settings.export_lanes > 1:
        lanes = open_stream_pool(state.url, settings.export_streams * (settings.export_lanes - 1),
                                 name="export-lanes")
    pools = [p for p in (streams, lanes) if p is not None]
    for pool in pools:
        pool.open()
    app.state.exports = ExportState(streams=streams, lanes=lanes,
                                    lane_count=settings.export_lanes,
                                    storage=export_storage(settings),
                                    url_ttl_seconds=settings.s3_url_ttl_seconds)
    try:
        yield
    finally:
        for pool in pools:
            await run_in_threadpool(pool.close)


router = APIRouter(prefix="/v1/exports", tags=["exports"], lifespan=lifespan)
State = Annotated[AppState, Depends(get_state)]
ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse} for s in (400, 404, 409, 410, 413, 415, 503)
}
_JOB_EXAMPLE = ('{"resource": "users", "format": "csv", "fields": [...], "filters": {...}, '
                '"compression": "gzip"}')


async def get_exports(request: Request) -> ExportState:  # async: no thread hand-off
    exports: ExportState = request.app.state.exports
    return exports


Exports = Annotated[ExportState, Depends(get_exports)]


class ExportRequest(BaseModel):
    # An unknown key is a 400, like an unknown query parameter: a misspelt "filter"
    # would otherwise export the whole table.
    model_config = ConfigDict(extra="forbid")

    resource: str
    format: str | None = None
    fields: list[str] | str | None = None
    filters: dict[str, str | bool | list[str]] = Field(default_factory=dict)
    compression: Literal["none", "gzip"] | None = Field(
        default=None, description="gzip: the file is stored and served gzipped (.gz)")


class ExportJob(BaseModel):
    job_id: str
    resource: str
    format: str
    compression: Literal["none", "gzip"]
    fields: list[str] | None
    filters: dict[str, list[str]]
    status: JobStatus
    record_count: int
    file_size_bytes: int | None
    download_url: str | None = Field(
        description="/v1/exports/{id}/download, or a presigned URL with S3 storage")
    expires_at: datetime | None
    failure_reason: str | None
    request_id: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None


class ExportJobPage(BaseModel):
    data: list[ExportJob]
    next_cursor: str | None


_STREAM_DOC: dict[str, Any] = {"responses": {"200": {
    "description": "The export (chunked), or with no `resource` a page of export jobs",
    "content": export_content(json_page=ExportJobPage.model_json_schema()),
}}}
_DOWNLOAD_DOC: dict[str, Any] = {"responses": {"200": {
    "description": "The export file (application/gzip when stored gzipped)",
    "content": export_content() | {"application/gzip": {"schema": {"type": "string",
                                                                    "format": "binary"}}},
}}}


@router.get("", responses=ERRORS, openapi_extra=_STREAM_DOC,
            summary="Stream an export (with resource=…), or list export jobs")
async def stream_export(request: Request, state: State, exports: Exports,
                        query: Annotated[ExportQuery, Query()]) -> Response:
    """Stream ``resource`` as ndjson (default), csv or json.

    ``fields=a,b`` projects; filters are equality on the resource's filterable
    fields (``role=admin``, repeat for any-of), ``<ts>_from`` / ``<ts>_to`` /
    ``updated_since`` on timestamps, ``tag=`` on article tags. Rows come in id
    order. Send ``Accept-Encoding: gzip`` for a gzipped stream. Without
    ``resource``, lists export jobs (``status``, ``limit``, ``cursor``).
    """
    if not query.streams:
        return await run_in_threadpool(_list, state, exports, *query.job_page())
    spec = query.spec(request.query_params)
    gzip = accepts_gzip(request.headers.get("accept-encoding"))
    stream = CopyStream(exports.streams.connection(timeout=STREAM_WAIT_SECONDS), spec, gzip=gzip,
                        helpers=helper_connections(exports))
    await _start(stream, state)
    return CopyStreamResponse(stream, media_type=spec.media_type,
                              headers=_stream_headers(spec.filename, gzip))


async def _start(stream: CopyStream, state: AppState) -> None:
    try:
        await stream.start()
    except PoolTimeout:
        raise TooManyExports(
            "every export connection is busy; retry in a few seconds or use POST /v1/exports",
            limit=state.settings.export_streams) from None


def _stream_headers(filename: str, gzip: bool) -> dict[str, str]:
    headers = {"Content-Disposition": f'attachment; filename="{filename}"',
               "Vary": "Accept-Encoding", "Cache-Control": "no-store"}
    if gzip:
        headers["Content-Encoding"] = "gzip"
    return headers


@router.post("", status_code=202, response_model=ExportJob, responses=ERRORS,
             summary="Start an export job")
async def create_export(
    request: Request, state: State, exports: Exports,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    body = await read_json(request, ExportRequest, _JOB_EXAMPLE)
    spec = parse_spec(body.resource, body.format, body.fields, body.filters)
    compression = body.compression or "none"
    identity = spec.identity() | {"compression": compression}
    values = {"resource": spec.resource.name, "format": spec.format.value,
              "fields": Jsonb(list(spec.fields)), "filters": Jsonb(spec.filters),
              "compression": compression,
              "idempotency_key": scoped_idempotency_key(request, idempotency_key),
              "request_id": request_id_var.get(),
              "fingerprint": fingerprint(**identity)}
    job, created = await run_in_threadpool(_create, state, values)
    return JSONResponse(export_job_view(job, exports), status_code=202 if created else 200,
                        headers={"Location": f"/v1/exports/{job.id}"})


def _create(state: AppState, values: dict[str, Any]) -> tuple[ExportRecord, bool]:
    with state.conn() as conn:
        return service.create(conn, JobKind.EXPORT, values)


def _list(state: AppState, exports: ExportState, status: str | None, limit: int,
          after: tuple[datetime, str] | None) -> JSONResponse:
    with state.conn() as conn:
        jobs = service.list_jobs(conn, JobKind.EXPORT, status=status, resource=None,
                                 limit=limit, after=after)
    data = [export_job_view(j, exports) for j in jobs]
    nxt = encode_cursor(jobs[-1].created_at, jobs[-1].id) if len(jobs) == limit else None
    return JSONResponse({"data": data, "next_cursor": nxt})


@router.get("/{job_id}", response_model=ExportJob, responses=ERRORS, summary="Export status")
def get_export(job_id: JobId, state: State, exports: Exports) -> JSONResponse:
    with state.conn() as conn:
        job = service.get(conn, JobKind.EXPORT, job_id)
    return JSONResponse(export_job_view(job, exports))


@router.get("/{job_id}/download", responses=ERRORS | {307: {"description": "To S3"}},
            openapi_extra=_DOWNLOAD_DOC, summary="Download the file of a completed export")
def download_export(job_id: JobId, state: State, exports: Exports) -> Response:
    with state.conn() as conn:
        job = service.get(conn, JobKind.EXPORT, job_id)
    return _file_response(job, exports)


def _file_response(job: ExportRecord, exports: ExportState) -> Response:
    """The export's file (or a redirect to it), once completed and until it expires."""
    status = JobStatus(job.status)
    if status is not JobStatus.COMPLETED:
        raise Conflict(f"the export is {status}; its file can be downloaded once it is "
                       "completed", status=status.value)
    key = job.file_key
    if key is None or _expired(job) or not exports.storage.exists(key):
        raise ExportExpired(f"the export expired at {job.expires_at}; start a new export",
                            expires_at=str(job.expires_at))
    url = _presigned(job, exports)
    if url is not None:
        return RedirectResponse(url, status_code=307)
    name = f"{job.resource}-{job.id}.{job.format}"
    if job.compression == "gzip":
        # The file is a .gz to keep: served as application/gzip, not Content-Encoding
        # (a client would inflate that on the fly and save the plain file under a .gz name).
        return FileResponse(exports.storage.path(key), media_type=GZIP_MEDIA_TYPE,
                            filename=f"{name}.gz")
    return FileResponse(exports.storage.path(key), media_type=MEDIA_TYPES_BY_NAME[job.format],
                        filename=name)


@router.post("/{job_id}/cancel", response_model=ExportJob, responses=ERRORS,
             summary="Cancel a pending or processing export")
def cancel_export(job_id: JobId, state: State, exports: Exports) -> JSONResponse:
    job = service.cancel(state.conn, JobKind.EXPORT, job_id)
    return JSONResponse(export_job_view(job, exports))


# --- views -----------------------------------------------------------------------------

MEDIA_TYPES_BY_NAME = {f.value: t for f, t in MEDIA_TYPES.items()}
GZIP_MEDIA_TYPE = "application/gzip"


def _expired(job: ExportRecord) -> bool:
    expires = job.expires_at
    return expires is not None and expires <= datetime.now(UTC)


def _presigned(job: ExportRecord, exports: ExportState) -> str | None:
    if job.expires_at is None or job.file_key is None:  # a completed export has both
        return None
    remaining = int((job.expires_at - datetime.now(UTC)).total_seconds())
    return exports.storage.presigned_url(
        job.file_key, expires_in=min(exports.url_ttl_seconds, remaining))


def export_job_view(job: ExportRecord, exports: ExportState) -> dict[str, Any]:
    status = JobStatus(job.status)
    download = None
    if status is JobStatus.COMPLETED and job.file_key and not _expired(job):
        download = _presigned(job, exports) or f"/v1/exports/{job.id}/download"
    return {
        "job_id": job.id, "resource": job.resource, "format": job.format,
        "compression": job.compression, "fields": job.fields,
        "filters": job.filters or {}, "status": status,
        "record_count": job.record_count, "file_size_bytes": job.file_size_bytes,
        "download_url": download, "expires_at": job.expires_at,
        "failure_reason": job.failure_reason, "request_id": job.request_id,
        "created_at": job.created_at, "started_at": job.started_at,
        "completed_at": job.completed_at,
    }
