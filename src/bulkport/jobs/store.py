"""The only code that reads or writes the job tables and ``import_errors``.

Every statement is a named query from ``bulkport/sql/queries.sql``. Methods take
an open connection so that callers decide the transaction: the importer writes
a batch's rows, its error rows and :meth:`JobStore.commit_import_batch` in one.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from bulkport.errors import Conflict, IdempotencyConflict, LeaseLost, NotFound
from bulkport.jobs.status import JobKind, JobStatus
from bulkport.pipeline.types import Rejected
from bulkport.resources.base import clip_depth
from bulkport.sql import QUERIES

Conn = psycopg.Connection[Any]
Job = dict[str, Any]

#: Largest page of a list endpoint.
MAX_PAGE = 100


def new_job_id() -> str:
    return str(uuid.uuid4())


def fingerprint(**parts: Any) -> str:
    """A stable digest of what makes two requests "the same" for idempotency."""
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _one(conn: Conn, name: str, params: dict[str, Any]) -> Job | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(QUERIES[name], params)
        return cur.fetchone()


def _all(conn: Conn, name: str, params: dict[str, Any]) -> list[Job]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(QUERIES[name], params)
        return cur.fetchall()


class JobStore:
    """Job state transitions for imports and exports."""

    # --- creation (API) --------------------------------------------------------------

    def create(self, conn: Conn, kind: JobKind, values: dict[str, Any]) -> tuple[Job, bool]:
        """Insert a job; return ``(job, created)``.

        With an idempotency key, a concurrent or earlier request with the same key
        returns the existing job (``created=False``) when its fingerprint matches,
        and raises :class:`IdempotencyConflict` otherwise. The UNIQUE constraint
        makes concurrent duplicates create exactly one job.
        """
        params = {"id": new_job_id(), **values}
        if kind is JobKind.EXPORT:
            params.setdefault("compression", "none")
        job = _one(conn, f"insert_{kind}_job", params)
        if job is not None:
            return job, True
        existing = _one(conn, f"get_{kind}_job_by_key", params)
        if existing is None:  # deleted in between: vanishingly rare, try again
            return self.create(conn, kind, values)
        if existing["fingerprint"] != values["fingerprint"]:
            raise IdempotencyConflict(
                "this Idempotency-Key was already used with a different request; "
                "use a new key for a new request",
                job_id=existing["id"],
            )
        return existing, False

    def get(self, conn: Conn, kind: JobKind, job_id: str) -> Job:
        job = _one(conn, f"get_{kind}_job", {"id": job_id})
        if job is None:
            raise NotFound(f"no {kind} job with id {job_id!r}")
        return job

    def list_jobs(
        self, conn: Conn, kind: JobKind, *, status: str | None, resource: str | None,
        limit: int, after: tuple[datetime, str] | None,
    ) -> list[Job]:
        return _all(conn, f"list_{kind}_jobs", {
            "status": status, "resource": resource, "limit": min(limit, MAX_PAGE),
            "after_created": after[0] if after else None, "after_id": after[1] if after else None,
        })

    def cancel(self, conn: Conn, kind: JobKind, job_id: str) -> Job:
        """Cancel a pending/processing job; :class:`Conflict` (409) in any other state."""
        job = _one(conn, f"cancel_{kind}_job", {"id": job_id})
        if job is None:
            status = self.get(conn, kind, job_id)["status"]
            raise Conflict(f"the {kind} job is {status}; only pending or processing jobs "
                           "can be cancelled", status=status)
        return job

    # --- queue (workers) ------------------------------------------------------------

    def claim(self, conn: Conn, kind: JobKind, owner: str, lease_seconds: float) -> Job | None:
        return _one(conn, f"claim_{kind}_job", {"owner": owner, "lease_seconds": lease_seconds})

    def renew(self, conn: Conn, kind: JobKind, job_id: str, owner: str,
              lease_seconds: float) -> JobStatus | None:
        """Extend the lease; ``None`` when the job is no longer ours to run."""
        row = _one(conn, f"renew_{kind}_lease",
                   {"id": job_id, "owner": owner, "lease_seconds": lease_seconds})
        return JobStatus(row["status"]) if row else None

    def release(self, conn: Conn, kind: JobKind, job_id: str, owner: str) -> None:
        conn.execute(QUERIES[f"release_{kind}_job"], {"id": job_id, "owner": owner})

    # --- import progress --------------------------------------------------------------

    def set_import_source(self, conn: Conn, job_id: str, owner: str, *, fmt: str,
                          columns: Sequence[str] | None, file_key: str | None,
                          file_size_bytes: int | None) -> None:
        conn.execute(QUERIES["set_import_source"], {
            "id": job_id, "owner": owner, "format": fmt,
            # jsonb cannot hold NUL; a header of a binary file may (as import_errors may).
            "columns": Jsonb([c.replace("\x00", "\ufffd") for c in columns])
            if columns is not None else None,
            "file_key": file_key, "file_size_bytes": file_size_bytes,
        })

    def write_import_errors(self, conn: Conn, job_id: str, rejected: Iterable[Rejected]) -> None:
        """COPY one row per rejected record into ``import_errors``."""
        with conn.cursor() as cur, cur.copy(
            "COPY import_errors (job_id, row, record, errors) FROM STDIN"
        ) as copy:
            for rej in rejected:
                copy.write_row((
                    job_id, rej.row, _json_text(rej.original),
                    _json_text([e.entry() for e in rej.errors]),
                ))

    def commit_import_batch(self, conn: Conn, job_id: str, owner: str, *, checkpoint: int,
                            bytes_processed: int, processed: int, successful: int,
                            rejected: int, failed_batches: int, error_counts: dict[str, int],
                            lease_seconds: float) -> JobStatus:
        """Record a batch's progress in the caller's transaction.

        Raises :class:`LeaseLost` when this worker no longer owns the job, so the
        caller rolls the whole batch back and another worker redoes it.
        """
        row = _one(conn, "commit_import_batch", {
            "id": job_id, "owner": owner, "checkpoint": checkpoint,
            "bytes_processed": bytes_processed, "processed": processed,
            "successful": successful, "rejected": rejected, "failed_batches": failed_batches,
            "error_counts": Jsonb(error_counts), "lease_seconds": lease_seconds,
        })
        if row is None:
            raise LeaseLost()
        return JobStatus(row["status"])

    def reset_import_progress(self, conn: Conn, job_id: str, owner: str) -> None:
        conn.execute(QUERIES["reset_import_progress"], {"id": job_id, "owner": owner})
        conn.execute(QUERIES["delete_import_errors"], {"id": job_id})

    def finish(self, conn: Conn, kind: JobKind, job_id: str, owner: str, status: JobStatus,
               failure_reason: str | None = None, **extra: Any) -> Job | None:
        return _one(conn, f"finish_{kind}_job", {
            "id": job_id, "owner": owner, "status": status.value,
            "failure_reason": failure_reason, **extra,
        })

    # --- export files ---------------------------------------------------------------

    def expired_exports(self, conn: Conn, limit: int = MAX_PAGE) -> list[Job]:
        """``{id, file_key}`` of exports whose file outlived ``expires_at``."""
        return _all(conn, "list_expired_exports", {"limit": limit})

    def forget_export_file(self, conn: Conn, job_id: str, file_key: str) -> None:
        conn.execute(QUERIES["forget_export_file"], {"id": job_id, "file_key": file_key})

    def import_errors(self, conn: Conn, job_id: str, *, after_row: int,
                      limit: int) -> list[Job]:
        return _all(conn, "list_import_errors",
                    {"id": job_id, "after_row": after_row, "limit": limit})


def _json_text(value: Any) -> str | None:
    """JSON text for a jsonb column; NUL is not allowed in jsonb, so it is replaced."""
    if value is None:
        return None
    try:
        data = orjson.dumps(value, default=str)
    except TypeError:  # nested deeper than orjson writes (255 levels): keep the top
        data = orjson.dumps(clip_depth(value), default=str)
    if b"\\u0000" in data:
        data = data.replace(b"\\u0000", b"\\ufffd")
    return data.decode()


STORE = JobStore()
