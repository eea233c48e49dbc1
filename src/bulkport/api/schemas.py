"""Response shapes of the API (and so of its OpenAPI document)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, Field

from bulkport import records
from bulkport.errors import BadRequest
from bulkport.jobs.status import JobStatus


class ErrorResponse(BaseModel):
    error: str
    message: str
    details: dict[str, Any] = {}
    request_id: str | None = None


class ErrorEntry(BaseModel):
    row: int = Field(description="1-based record number in the file")
    field: str | None
    value: Any = None
    code: str
    message: str


class ImportJob(BaseModel):
    job_id: str
    resource: str
    format: str | None
    mode: str
    dry_run: bool
    status: JobStatus
    file_name: str | None
    file_size_bytes: int | None
    total_records: int | None
    processed_records: int
    successful_records: int
    error_records: int
    error_counts: dict[str, int] = Field(description="Error entries by code")
    progress: float = Field(ge=0, le=1)
    rows_per_sec: float | None
    eta_seconds: float | None
    errors: list[ErrorEntry] = Field(description="The first 100 error entries")
    errors_url: str
    failed_batches: int
    failure_reason: str | None
    column_map: dict[str, str] | None = Field(
        description="The column_map the import was sent with")
    delimiter: str | None = Field(
        description="CSV: the delimiter declared, or once the file is opened, the one used")
    encoding: str | None = Field(description="The encoding declared (null: UTF-8 or a BOM)")
    encoding_hint: str | None = Field(
        description="Set when a file read as UTF-8 is not valid UTF-8 in its first block: "
        "the encoding it looks like, and how to import it with that encoding")
    waiting_for: list[str] = Field(
        description="While pending: the ids of the earlier jobs of referenced resources this "
        "one waits for (load order); empty when it may start")
    request_id: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None


class ImportJobPage(BaseModel):
    data: list[ImportJob]
    next_cursor: str | None


class ErrorPage(BaseModel):
    data: list[ErrorEntry]
    next_cursor: str | None


def import_job_view(job: records.ImportJob, errors: list[dict[str, Any]] | orjson.Fragment,
                    waiting_for: list[str] | None = None) -> dict[str, Any]:
    status = JobStatus(job.status)
    now = datetime.now(UTC)
    started = job.started_at
    end = job.completed_at or now
    elapsed = (end - started).total_seconds() if started else None
    processed = job.processed_records
    share = job.bytes_processed / job.file_size_bytes if job.file_size_bytes else 0.0
    if status is JobStatus.CANCELLED:
        progress = min(share, 1.0)  # how far it got: a cancelled job did not finish its file
    elif status.terminal:
        progress = 1.0
    else:
        progress = min(share, 0.999)
    rate = processed / elapsed if elapsed and processed else None
    eta = None
    if not status.terminal and progress > 0 and elapsed:
        eta = round(elapsed * (1 - progress) / progress, 1)
    return {
        "job_id": job.id, "resource": job.resource, "format": job.format,
        "mode": job.mode, "dry_run": job.dry_run, "status": status,
        "file_name": job.file_name, "file_size_bytes": job.file_size_bytes,
        "total_records": job.total_records, "processed_records": processed,
        "successful_records": job.successful_records, "error_records": job.error_records,
        "error_counts": job.error_counts or {},
        "progress": round(progress, 4), "rows_per_sec": round(rate, 1) if rate else None,
        "eta_seconds": eta, "errors": errors,
        "errors_url": f"/v1/imports/{job.id}/errors",
        "failed_batches": job.failed_batches, "failure_reason": job.failure_reason,
        "column_map": job.column_map, "delimiter": job.delimiter,
        "encoding": job.encoding, "encoding_hint": job.encoding_hint,
        "waiting_for": waiting_for or [], "request_id": job.request_id,
        "created_at": job.created_at,
        "started_at": started, "completed_at": job.completed_at,
    }


def flatten_errors(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"row": r["row"], **e} for r in rows for e in r["errors"]]


# --- cursors: opaque to clients -----------------------------------------------------------


def encode_cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(parts, default=str)).decode().rstrip("=")


def decode_cursor(cursor: str, n: int) -> list[Any]:
    try:
        parts = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(parts, list) or len(parts) != n:
            raise ValueError
        return parts
    except ValueError:
        raise BadRequest("invalid cursor; pass the next_cursor of a previous page") from None


# --- import preview (POST /v1/imports/preview) ---------------------------------------------


class PreviewColumn(BaseModel):
    column: str = Field(description="The column (CSV header, or JSON key) as in the file")
    field: str | None = Field(description="The field it feeds; null: ignored")
    matched_by: str | None = Field(
        description="'name' (case-insensitive, - and space as _), 'column_map', or null")


class PreviewField(BaseModel):
    name: str
    required: bool
    kind: str


class PreviewRecord(BaseModel):
    row: int = Field(description="1-based record number in the file")
    valid: bool = Field(description="Whether the import would load it (database checks "
                        "included, as in a dry run)")
    record: dict[str, Any] | None = Field(
        description="The record as it would be stored (an absent id shows the generated "
        "one, empty optional fields their insert default); null when rejected")
    original: Any = Field(description="The record as read from the file")
    errors: list[dict[str, Any]] = Field(
        description="Its errors: {field, value, code, message}, as the import reports them")


class ImportPreview(BaseModel):
    """How an import would read a file, and what its first records would become.

    Nothing is written. Send the same fields as to POST /v1/imports; fix the
    mapping with column_map (see suggested_column_map) and preview again."""

    resource: str
    mode: str
    format: str = Field(description="csv, ndjson or json (tsv reads as csv with a tab)")
    delimiter: str | None = Field(description="CSV: the delimiter used (given or detected)")
    encoding: str = Field(description="The encoding the file is read with")
    encoding_from_bom: bool = Field(description="Whether a byte-order mark told the encoding")
    encoding_hint: str | None = Field(
        description="Read as UTF-8 but not UTF-8: what the file looks like, what to send")
    columns: list[PreviewColumn] = Field(description="Each column and the field it feeds")
    unmapped_columns: list[str] = Field(description="Columns that feed no field (ignored)")
    missing_required_fields: list[str] = Field(
        description="Required fields no column feeds: the import would answer 422")
    suggested_column_map: dict[str, str] = Field(
        description="A column_map for the missing fields, from the closest column names")
    fields: list[PreviewField] = Field(description="The fields of the resource")
    records: list[PreviewRecord]
    records_read: int
    limit: int
    end_of_file: bool = Field(description="Whether the records shown are the whole file")
