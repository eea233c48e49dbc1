"""What a finished job tells operators: one summary log line and the job metrics.

The summary is computed from the job row as committed (the same numbers the API
shows), so a job resumed by another worker is summarised whole. A job whose
error rate exceeds :data:`HIGH_ERROR_RATE` also logs a warning: a file that
is mostly rejected usually means the wrong resource, mapping or format.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bulkport import metrics
from bulkport.jobs.status import JobKind, JobStatus
from bulkport.logs import log_context

log = logging.getLogger("bulkport.jobs")

#: Share of rejected records above which a finished job logs a warning.
HIGH_ERROR_RATE = 0.10


@contextmanager
def job_log_context(kind: JobKind, job: dict[str, Any]) -> Iterator[None]:
    """Bind the job's id and the id of the request that created it to every log line."""
    with log_context(job_id=job["id"], request_id=job.get("request_id"), job_type=str(kind),
                     resource=job.get("resource")):
        yield


def summary(kind: JobKind, job: dict[str, Any]) -> dict[str, Any]:
    """The numbers of the summary line of a finished job."""
    started, completed = job.get("started_at"), job.get("completed_at")
    seconds = (completed - started).total_seconds() if started and completed else None
    if kind is JobKind.IMPORT:
        processed = int(job["processed_records"])
        counters: dict[str, Any] = {
            "processed_records": processed,
            "successful_records": int(job["successful_records"]),
            "error_records": int(job["error_records"]),
            "failed_batches": int(job["failed_batches"]),
            "dry_run": bool(job["dry_run"]),
        }
        rejected = int(job["error_records"])
    else:
        processed = int(job.get("record_count") or 0)
        counters = {"record_count": processed, "file_size_bytes": job.get("file_size_bytes")}
        rejected = 0
    return {
        "status": str(job["status"]),
        "duration_ms": round(seconds * 1000) if seconds is not None else None,
        "rows_per_sec": round(processed / seconds, 1) if seconds and processed else 0.0,
        "error_rate": round(rejected / processed, 4) if processed else 0.0,
        **counters,
        "attempts": job.get("attempts"),
        "failure_reason": job.get("failure_reason"),
    }


def report_finished(kind: JobKind, job: dict[str, Any]) -> None:
    """Log the summary line of a job in a final status and count it in the metrics."""
    status = JobStatus(job["status"])
    if not status.terminal:
        return
    fields = summary(kind, job)
    seconds = fields["duration_ms"] / 1000 if fields["duration_ms"] is not None else None
    metrics.job_finished(str(kind), job["resource"], status.value, seconds)
    log.info("%s job %s finished: %s, %s records, %.1f rows/s, error rate %.2f%%", kind,
             job["id"], status.value, fields.get("processed_records", fields.get("record_count")),
             fields["rows_per_sec"], fields["error_rate"] * 100,
             extra={"event": "job_summary", **fields})
    if fields["error_rate"] > HIGH_ERROR_RATE:
        log.warning("%s job %s rejected %.1f%% of its records (more than %.0f%%): check the "
                    "resource, format and columns of the file", kind, job["id"],
                    fields["error_rate"] * 100, HIGH_ERROR_RATE * 100,
                    extra={"event": "high_error_rate", "error_rate": fields["error_rate"],
                           "threshold": HIGH_ERROR_RATE})
