"""Typed job records: a row of the ``jobs`` table as the code reads it.

:class:`Job` holds what both kinds have; :class:`ImportJob` and :class:`ExportJob`
add their kind's details (the nullable columns of that kind). Records are built
by :mod:`bulkport.jobs.service` and read by the worker, the pipelines and the
API; they are frozen, since only the jobs runtime changes job state, and it
does so in the database.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bulkport.status import JobKind, JobStatus


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """The columns every job has."""

    id: str
    kind: JobKind
    status: JobStatus
    resource: str
    format: str | None
    idempotency_key: str | None
    fingerprint: str
    request_id: str | None
    file_key: str | None
    file_size_bytes: int | None
    attempts: int
    owner: str | None
    lease_expires_at: datetime | None
    failure_reason: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    updated_at: datetime

    def row(self) -> dict[str, Any]:
        """The record as a dict of its columns (what tests and the job summary read)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportJob(Job):
    """An import: its reading options, progress counters and checkpoint."""

    mode: str
    dry_run: bool
    source_url: str | None
    file_name: str | None
    columns: list[str] | None
    total_records: int | None
    processed_records: int
    successful_records: int
    error_records: int
    failed_batches: int
    error_counts: dict[str, int]
    #: The row of the last record committed: a run resumes after it.
    checkpoint: int
    bytes_processed: int
    #: Resources whose earlier jobs this one waits for (load order).
    waits_for: list[str]
    file_deleted_at: datetime | None
    column_map: dict[str, str] | None
    delimiter: str | None
    encoding: str | None
    encoding_hint: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportJob(Job):
    """An export: what it selects and the file it produced."""

    format: str
    fields: list[str] | None
    filters: dict[str, Any]
    record_count: int
    expires_at: datetime | None
    compression: str


def job_from_row(row: Mapping[str, Any]) -> ImportJob | ExportJob:
    """The record of a ``jobs`` row (extra columns of a query, e.g. first errors, are left)."""
    cls: type[ImportJob] | type[ExportJob] = (ImportJob if row["kind"] == JobKind.IMPORT
                                              else ExportJob)
    values = {f.name: row[f.name] for f in dataclasses.fields(cls)}
    values["kind"], values["status"] = JobKind(row["kind"]), JobStatus(row["status"])
    return cls(**values)
