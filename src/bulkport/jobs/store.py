"""The only code that reads or writes the ``jobs`` table and ``import_errors``.

Rows are dicts of columns here; :mod:`bulkport.jobs.service` turns them into
typed records for everyone else. Every statement is a named query from
``bulkport/sql/queries.sql``. Methods take
an open connection so that callers decide the transaction: the importer writes
a batch's rows, its error rows and :meth:`JobStore.commit_import_batch` in one.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from bulkport.errors import Conflict, IdempotencyConflict, LeaseLost, NotFound
from bulkport.pipeline.types import Rejected
from bulkport.resources import get_resource
from bulkport.resources.base import clip_depth
from bulkport.sql import QUERIES
from bulkport.status import JobKind, JobStatus

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


#: The details a new job may give; those of the other kind (and any not given) are NULL.
_DETAILS = ("format", "file_key", "file_size_bytes", "mode", "dry_run", "source_url",
            "file_name", "waits_for", "column_map", "delimiter", "encoding",
            "fields", "filters", "compression")


def _new_row(kind: JobKind, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters of ``insert_job``."""
    imports = kind is JobKind.IMPORT
    # The defaults the separate tables had, for each kind's own columns.
    defaults = {"dry_run": False} if imports else {"filters": Jsonb({}), "compression": "none"}
    return dict.fromkeys(_DETAILS) | defaults | params | {
        "kind": kind.value, "error_counts": Jsonb({}) if imports else None,
        "record_count": None if imports else 0}


def _found(job: Job | None, kind: JobKind, job_id: str) -> Job:
    if job is None:
        raise NotFound(f"no {kind} job with id {job_id!r}")
    return job


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
        if kind is JobKind.IMPORT:
            # Load order (SPEC §4): the resources whose earlier jobs this one waits for,
            # fixed at submit time so that the claim statement needs no resource graph.
            wait = values.get("wait_for_parents", True)
            params["waits_for"] = get_resource(values["resource"]).parents if wait else []
            # Reading options (docs/imports.md): NULL when not given.
            cmap = values.get("column_map")
            params["column_map"] = Jsonb(cmap) if cmap is not None else None
            params.setdefault("delimiter", None)
            params.setdefault("encoding", None)
        job = _one(conn, "insert_job", _new_row(kind, params))
        if job is not None:
            return job, True
        existing = _one(conn, "get_job_by_key", {"kind": kind.value, **params})
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
        return _found(_one(conn, "get_job", {"id": job_id, "kind": kind.value}), kind, job_id)

    def list_jobs(
        self, conn: Conn, kind: JobKind, *, status: str | None, resource: str | None,
        limit: int, after: tuple[datetime, str] | None,
    ) -> list[Job]:
        return _all(conn, "list_jobs", {"kind": kind.value,
            "status": status, "resource": resource, "limit": min(limit, MAX_PAGE),
            "after_created": after[0] if after else None, "after_id": after[1] if after else None,
        })

    def import_status(self, conn: Conn, job_id: str, *, first_errors: int,
                      known: dict[str, Any] | None = None) -> Job:
        """The import job with ``first_errors``: its first error records' ``row`` and ``errors``.

        One round trip, where the job then its errors took two (bench/README.md,
        "Status reads"). ``known`` (``known_records``, ``known_updated_at``) is the
        version of the errors the caller holds: when the job is still at it,
        ``first_errors`` is ``None`` and PostgreSQL reads no error record.
        """
        params = {"known_records": None, "known_updated_at": None, **(known or {}),
                  "id": job_id, "limit": first_errors}
        job = _one(conn, "get_import_status", params)
        return _found(job, JobKind.IMPORT, job_id)

    def cancel(self, conn: Conn, kind: JobKind, job_id: str) -> Job:
        """Cancel a pending/processing job; :class:`Conflict` (409) in any other state."""
        job = _one(conn, "cancel_job", {"id": job_id, "kind": kind.value})
        if job is None:
            status = self.get(conn, kind, job_id)["status"]
            raise Conflict(f"the {kind} job is {status}; only pending or processing jobs "
                           "can be cancelled", status=status)
        return job

    # --- queue (workers) ------------------------------------------------------------

    def claim(self, conn: Conn, first: JobKind, owner: str, lease_seconds: float) -> Job | None:
        """Claim the job to run next, of either kind; jobs of ``first`` are looked at first."""
        return _one(conn, "claim_job", {"first": first.value, "owner": owner,
                                        "lease_seconds": lease_seconds})

    def renew(self, conn: Conn, job_id: str, owner: str, lease_seconds: float
              ) -> JobStatus | None:
        """Extend the lease; ``None`` when the job is no longer ours to run."""
        row = _one(conn, "renew_lease",
                   {"id": job_id, "owner": owner, "lease_seconds": lease_seconds})
        return JobStatus(row["status"]) if row else None

    def release(self, conn: Conn, job_id: str, owner: str) -> None:
        conn.execute(QUERIES["release_job"], {"id": job_id, "owner": owner})

    def end_cancelled(self, conn: Conn, job_id: str, owner: str) -> None:
        """Drop the lease of a job cancelled while ``owner`` ran it (its last batch is in)."""
        conn.execute(QUERIES["end_cancelled_job"], {"id": job_id, "owner": owner})

    def waiting_for(self, conn: Conn, jobs: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
        """For each pending import among ``jobs``, the ids of the earlier jobs it waits for.

        One query for a whole page, and none when no job of it is pending.
        """
        ids = [j["id"] for j in jobs if j["status"] == JobStatus.PENDING and j["waits_for"]]
        if not ids:
            return {}
        return {r["id"]: r["waiting_for"] for r in _all(conn, "import_waiting_for", {"ids": ids})}

    # --- import progress --------------------------------------------------------------

    def set_import_source(self, conn: Conn, job_id: str, owner: str, *, fmt: str | None,
                          columns: Sequence[str] | None, file_key: str | None,
                          file_size_bytes: int | None, delimiter: str | None = None,
                          encoding_hint: str | None = None) -> None:
        """What the worker learnt opening the file (None: leave as it is)."""
        conn.execute(QUERIES["set_import_source"], {
            "delimiter": delimiter, "encoding_hint": encoding_hint,
            "id": job_id, "owner": owner, "format": fmt,
            # jsonb cannot hold NUL; a header of a binary file may (as import_errors may).
            "columns": Jsonb([c.replace("\x00", "\ufffd") for c in columns])
            if columns is not None else None,
            "file_key": file_key, "file_size_bytes": file_size_bytes,
        })

    def write_import_errors(self, conn: Conn, job_id: str, rejected: Iterable[Rejected]) -> None:
        """COPY one row per rejected record into ``import_errors``."""
        with conn.cursor() as cur, cur.copy(QUERIES["copy_import_errors"]) as copy:
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
        # Errors first: the reset's new updated_at then marks every reader's cached
        # first errors stale (api/first_errors.py), even outside a transaction.
        conn.execute(QUERIES["delete_import_errors"], {"id": job_id})
        conn.execute(QUERIES["reset_import_progress"], {"id": job_id, "owner": owner})

    def finish(self, conn: Conn, job_id: str, owner: str, status: JobStatus,
               failure_reason: str | None = None, **extra: Any) -> Job | None:
        return _one(conn, "finish_job", {
            "id": job_id, "owner": owner, "status": status.value,
            "failure_reason": failure_reason, "record_count": None, "file_key": None,
            "file_size_bytes": None, "expires_at": None, **extra,
        })

    def queue_stats(self, conn: Conn) -> list[Job]:
        """Unfinished jobs per kind, resource and status: count, ages, expired leases."""
        return _all(conn, "queue_stats", {})

    # --- stored files past their time (jobs/sweep.py) ---------------------------------

    def expired_files(self, conn: Conn, kind: JobKind, *, retention_seconds: float = 0,
                      limit: int = MAX_PAGE) -> list[Job]:
        """``{id, file_key}`` of jobs whose file may go, locked until the transaction ends.

        Exports: the file outlived ``expires_at``. Imports: the upload (or download)
        of a job that ended more than ``retention_seconds`` ago.
        """
        name = "list_expired_uploads" if kind is JobKind.IMPORT else "list_expired_exports"
        return _all(conn, name, {"limit": limit, "retention_seconds": retention_seconds})

    def forget_file(self, conn: Conn, kind: JobKind, job_id: str, file_key: str) -> None:
        """Record that the job's file was deleted."""
        name = "forget_upload_file" if kind is JobKind.IMPORT else "forget_export_file"
        conn.execute(QUERIES[name], {"id": job_id, "file_key": file_key})

    def import_errors(self, conn: Conn, job_id: str, *, after_row: int,
                      limit: int, code: str | None = None) -> list[Job]:
        """Rejected records after ``after_row``; with ``code``, only those having that code."""
        params: dict[str, Any] = {"id": job_id, "after_row": after_row, "limit": limit}
        if code is None:
            return _all(conn, "list_import_errors", params)
        params["code"] = orjson.dumps([{"code": code}]).decode()
        return _all(conn, "list_import_errors_with_code", params)


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
