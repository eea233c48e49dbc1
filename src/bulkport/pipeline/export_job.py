"""An export job: the export written to a temporary file, published when complete.

Runs without a web server: give it a claimed job, a connection factory, an
export storage and the runtime's :class:`~bulkport.pipeline.progress.JobControl`;
it returns the :class:`~bulkport.pipeline.progress.Outcome` for the runtime to
record. The file is written under a temporary name and published
(renamed, or uploaded to S3) only once the COPY finished, so a failed or
cancelled export leaves no partial file. A job cancelled while it runs stops
within about a second (its status is polled between chunks); a worker asked to
stop hands the job back, and the next worker starts it over.

Expired export files are deleted by the workers' file sweep.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bulkport import metrics
from bulkport.config import Settings
from bulkport.errors import BadRequest, no_room
from bulkport.pipeline.export.filesink import Stopped, write_export
from bulkport.pipeline.export_spec import parse_spec
from bulkport.pipeline.progress import JobControl, Outcome
from bulkport.records import ExportJob
from bulkport.status import JobStatus
from bulkport.storage import CHUNK_BYTES, ExportStorage, StorageError

log = logging.getLogger(__name__)

ConnFactory = Callable[[], psycopg.Connection[Any]]


@dataclass
class ExportRun:
    """Everything one run of one export job needs."""

    job: ExportJob
    settings: Settings
    storage: ExportStorage
    connect: ConnFactory
    #: Asked between chunks: whether the job is still this run's.
    control: JobControl


def file_key(job: ExportJob) -> str:
    gz = ".gz" if job.compression == "gzip" else ""
    return f"export-{job.id}.{job.format}{gz}"


def run_export(run: ExportRun) -> Outcome | None:
    """Run the job to its end; ``None`` when it was cancelled or handed back."""
    job = run.job
    try:
        spec = parse_spec(job.resource, job.format, job.fields, job.filters or {})
    except BadRequest as exc:  # stored by an older version with other rules
        return Outcome(JobStatus.FAILED, failure_reason=exc.message)
    key = file_key(job)
    tmp = run.storage.temp_path(key)
    try:
        with run.connect() as data, tmp.open("wb", buffering=CHUNK_BYTES) as out:
            records, size = write_export(data, spec, out, keep_going=run.control.keep_going,
                                         gzip=job.compression == "gzip")
        run.storage.publish(tmp, key)
        metrics.count_records("export", job.resource, records)
    except Stopped:
        log.info("export %s %s", job.id,
                 "handed back" if run.control.stop_requested() else "cancelled")
        return None
    except StorageError as exc:
        return Outcome(JobStatus.FAILED, failure_reason=str(exc))
    except OSError as exc:
        full = no_room(exc, "the export directory")
        if full is None:
            raise
        # Retrying on a full disk only fills it again: the job fails, readably.
        log.warning("export %s failed: %s", job.id, full.message)
        return Outcome(JobStatus.FAILED, failure_reason=full.message)
    finally:
        tmp.unlink(missing_ok=True)
    expires = datetime.now(UTC) + timedelta(seconds=run.settings.export_ttl_seconds)

    def unpublish() -> None:  # cancelled while the file was being published
        with contextlib.suppress(StorageError):
            run.storage.delete(key)

    return Outcome(JobStatus.COMPLETED, record_count=records, file_key=key,
                   file_size_bytes=size, expires_at=expires, undo=unpublish)
