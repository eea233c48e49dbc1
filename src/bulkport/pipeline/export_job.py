"""An export job: the export written to a temporary file, published when complete.

Runs without a web server: give it a claimed job row, a connection factory and
an export storage. The file is written under a temporary name and published
(renamed, or uploaded to S3) only once the COPY finished, so a failed or
cancelled export leaves no partial file. A job cancelled while it runs stops
within about a second (its status is polled between chunks); a worker asked to
stop hands the job back, and the next worker starts it over.

Expired export files are deleted by the workers' sweep (``bulkport.jobs.sweep``).
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
from bulkport.jobs.status import JobKind, JobStatus
from bulkport.jobs.store import STORE, Job
from bulkport.pipeline.export.filesink import Stopped, write_export
from bulkport.pipeline.export_spec import parse_spec
from bulkport.storage import CHUNK_BYTES, ExportStorage, StorageError

log = logging.getLogger(__name__)

ConnFactory = Callable[[], psycopg.Connection[Any]]


@dataclass
class ExportRun:
    """Everything one run of one export job needs."""

    job: Job
    owner: str
    settings: Settings
    storage: ExportStorage
    connect: ConnFactory
    #: True asks the run to hand the job back (graceful stop).
    should_stop: Callable[[], bool] = lambda: False


def file_key(job: Job) -> str:
    gz = ".gz" if job.get("compression") == "gzip" else ""
    return f"export-{job['id']}.{job['format']}{gz}"


def run_export(run: ExportRun) -> JobStatus | None:
    """Run the job to a terminal state; ``None`` when it was cancelled or handed back."""
    job = run.job
    with run.connect() as book:
        try:
            spec = parse_spec(job["resource"], job["format"], job["fields"], job["filters"] or {})
        except BadRequest as exc:  # stored by an older version with other rules
            return _finish(run, book, JobStatus.FAILED, failure_reason=exc.message)
        key = file_key(job)
        tmp = run.storage.temp_path(key)
        released = False

        def keep_going() -> bool:
            nonlocal released
            if run.should_stop():
                STORE.release(book, JobKind.EXPORT, job["id"], run.owner)
                released = True
                return False
            # Renewing also tells whether the job is still ours (not cancelled).
            return STORE.renew(book, JobKind.EXPORT, job["id"], run.owner,
                               run.settings.lease_seconds) is not None

        try:
            with run.connect() as data, tmp.open("wb", buffering=CHUNK_BYTES) as out:
                records, size = write_export(data, spec, out, keep_going=keep_going,
                                             gzip=job.get("compression") == "gzip")
            run.storage.publish(tmp, key)
            metrics.count_records("export", job["resource"], records)
        except Stopped:
            log.info("export %s %s", job["id"], "handed back" if released else "cancelled")
            return None
        except StorageError as exc:
            return _finish(run, book, JobStatus.FAILED, failure_reason=str(exc))
        except OSError as exc:
            full = no_room(exc, "the export directory")
            if full is None:
                raise
            # Retrying on a full disk only fills it again: the job fails, readably.
            log.warning("export %s failed: %s", job["id"], full.message)
            return _finish(run, book, JobStatus.FAILED, failure_reason=full.message)
        finally:
            tmp.unlink(missing_ok=True)
        expires = datetime.now(UTC) + timedelta(seconds=run.settings.export_ttl_seconds)
        status = _finish(run, book, JobStatus.COMPLETED, record_count=records, file_key=key,
                         file_size_bytes=size, expires_at=expires)
        if status is None:  # cancelled while the file was being published
            with contextlib.suppress(StorageError):
                run.storage.delete(key)
        return status


def _finish(run: ExportRun, conn: psycopg.Connection[Any], status: JobStatus, *,
            failure_reason: str | None = None, record_count: int = 0,
            file_key: str | None = None, file_size_bytes: int | None = None,
            expires_at: datetime | None = None) -> JobStatus | None:
    done = STORE.finish(conn, JobKind.EXPORT, run.job["id"], run.owner, status,
                        failure_reason=failure_reason, record_count=record_count,
                        file_key=file_key, file_size_bytes=file_size_bytes,
                        expires_at=expires_at)
    return status if done is not None else None
