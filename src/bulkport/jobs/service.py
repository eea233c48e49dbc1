"""The jobs service: every change of job state, on typed records.

The HTTP layer, the worker runtime and the tests call these functions; they run
the named queries of :mod:`bulkport.jobs.store` and hand back
:class:`~bulkport.records.ImportJob` / :class:`~bulkport.records.ExportJob`
records. Functions take an open connection, so that the caller decides the
transaction (a batch's rows and :func:`commit_batch` commit in one).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, Literal, overload

from bulkport.jobs.chunk_store import CHUNKS, ChunkClaim
from bulkport.jobs.store import STORE, Conn
from bulkport.pipeline.progress import BatchProgress, Outcome, SourceFacts
from bulkport.pipeline.split import Plan
from bulkport.records import ExportJob, ImportJob, Job, job_from_row
from bulkport.status import JobKind, JobStatus

#: How long a cancel waits for the batch in flight of a running import to commit.
CANCEL_SETTLE_SECONDS = 5.0
#: How often it looks meanwhile (seconds).
SETTLE_POLL_SECONDS = 0.05

Connect = Callable[[], AbstractContextManager[Conn]]
AnyJob = ImportJob | ExportJob


# --- the API's side ------------------------------------------------------------------


@overload
def create(conn: Conn, kind: Literal[JobKind.IMPORT], values: dict[str, Any]
           ) -> tuple[ImportJob, bool]: ...
@overload
def create(conn: Conn, kind: Literal[JobKind.EXPORT], values: dict[str, Any]
           ) -> tuple[ExportJob, bool]: ...
def create(conn: Conn, kind: JobKind, values: dict[str, Any]) -> tuple[AnyJob, bool]:
    """Queue a job; ``(job, created)``: an Idempotency-Key replay returns the first job.

    :class:`~bulkport.errors.IdempotencyConflict` when the key was used for
    another request.
    """
    row, created = STORE.create(conn, kind, values)
    return job_from_row(row), created


@overload
def get(conn: Conn, kind: Literal[JobKind.IMPORT], job_id: str) -> ImportJob: ...
@overload
def get(conn: Conn, kind: Literal[JobKind.EXPORT], job_id: str) -> ExportJob: ...
@overload
def get(conn: Conn, kind: JobKind, job_id: str) -> AnyJob: ...
def get(conn: Conn, kind: JobKind, job_id: str) -> AnyJob:
    """The job; :class:`~bulkport.errors.NotFound` (404) when there is none of ``kind``."""
    return job_from_row(STORE.get(conn, kind, job_id))


@overload
def list_jobs(conn: Conn, kind: Literal[JobKind.IMPORT], *, status: str | None,
              resource: str | None, limit: int, after: tuple[datetime, str] | None,
              ) -> list[ImportJob]: ...
@overload
def list_jobs(conn: Conn, kind: Literal[JobKind.EXPORT], *, status: str | None,
              resource: str | None, limit: int, after: tuple[datetime, str] | None,
              ) -> list[ExportJob]: ...
def list_jobs(conn: Conn, kind: JobKind, *, status: str | None, resource: str | None,
              limit: int, after: tuple[datetime, str] | None) -> Sequence[AnyJob]:
    """A page of jobs of ``kind``, newest first, after the cursor ``(created_at, id)``."""
    rows = STORE.list_jobs(conn, kind, status=status, resource=resource, limit=limit,
                           after=after)
    return [job_from_row(r) for r in rows]


def import_status(conn: Conn, job_id: str, *, first_errors: int,
                  known: dict[str, Any] | None = None,
                  ) -> tuple[ImportJob, list[dict[str, Any]] | None]:
    """The import and its first error records (``None``: the version ``known`` is current)."""
    row = STORE.import_status(conn, job_id, first_errors=first_errors, known=known)
    job = job_from_row(row)
    assert isinstance(job, ImportJob)
    return job, row["first_errors"]


def waiting_for(conn: Conn, jobs: Sequence[ImportJob]) -> dict[str, list[str]]:
    """For each pending import among ``jobs``, the earlier jobs it waits for."""
    return STORE.waiting_for(conn, [{"id": j.id, "status": j.status, "waits_for": j.waits_for}
                                    for j in jobs])


def import_errors(conn: Conn, job_id: str, *, after_row: int, limit: int,
                  code: str | None = None) -> list[dict[str, Any]]:
    """Stored rejected records ``{"row", "record", "errors"}`` after ``after_row``."""
    return STORE.import_errors(conn, job_id, after_row=after_row, limit=limit, code=code)


@overload
def cancel(connect: Connect, kind: Literal[JobKind.IMPORT], job_id: str) -> ImportJob: ...
@overload
def cancel(connect: Connect, kind: Literal[JobKind.EXPORT], job_id: str) -> ExportJob: ...
def cancel(connect: Connect, kind: JobKind, job_id: str) -> AnyJob:
    """Cancel a pending or processing job; :class:`~bulkport.errors.Conflict` otherwise.

    The job is returned as it stays. A running import always has a batch in
    flight, which still commits after the cancel: waiting for it (at most
    :data:`CANCEL_SETTLE_SECONDS`) makes the returned counters its final ones.
    A job no live worker holds has none.
    """
    with connect() as conn:
        job = job_from_row(STORE.cancel(conn, kind, job_id))
        CHUNKS.drop(conn, job_id, None)  # a split import: its chunks not begun never run
    if not isinstance(job, ImportJob) or not _held(job):
        return job
    deadline = time.monotonic() + CANCEL_SETTLE_SECONDS
    now = job
    while time.monotonic() < deadline:
        time.sleep(SETTLE_POLL_SECONDS)
        with connect() as conn:
            now = get(conn, JobKind.IMPORT, job_id)
        # A split import's chunks each commit their batch in flight; any one is a sign.
        if (now.checkpoint, now.processed_records) != (job.checkpoint, job.processed_records):
            return now
    return now


def _held(job: Job) -> bool:
    """Whether a live worker holds the job (its lease has not expired)."""
    lease = job.lease_expires_at
    return job.owner is not None and lease is not None and lease > datetime.now(UTC)


def queue_stats(conn: Conn) -> list[dict[str, Any]]:
    """Unfinished jobs per kind, resource and status (for /metrics)."""
    return STORE.queue_stats(conn)


# --- the worker's side ---------------------------------------------------------------


def claim(conn: Conn, first: JobKind, owner: str, lease_seconds: float) -> AnyJob | None:
    """Take the next job to run, of either kind (``first``'s jobs are looked at first)."""
    row = STORE.claim(conn, first, owner, lease_seconds)
    return job_from_row(row) if row is not None else None


def renew(conn: Conn, job_id: str, owner: str, lease_seconds: float) -> JobStatus | None:
    """Extend the lease; ``None`` when the job is no longer ``owner``'s to run."""
    return STORE.renew(conn, job_id, owner, lease_seconds)


def record_source(conn: Conn, job_id: str, owner: str, facts: SourceFacts) -> None:
    """What the worker learnt opening an import's file."""
    STORE.set_import_source(conn, job_id, owner, fmt=facts.format, columns=facts.columns,
                            file_key=facts.file_key, file_size_bytes=facts.file_size_bytes,
                            delimiter=facts.delimiter, encoding_hint=facts.encoding_hint)


def start_over(conn: Conn, job_id: str, owner: str) -> None:
    """Forget an import's progress and rejected records (a dry run restarts)."""
    STORE.reset_import_progress(conn, job_id, owner)


def commit_batch(conn: Conn, job_id: str, owner: str, batch: BatchProgress,
                 lease_seconds: float) -> JobStatus:
    """Record a batch's rejected records and progress in ``conn``'s transaction.

    :class:`~bulkport.errors.LeaseLost` when ``owner`` no longer runs the job.
    """
    if batch.rejected:
        STORE.write_import_errors(conn, job_id, batch.rejected)
    rejected = len(batch.rejected)
    return STORE.commit_import_batch(
        conn, job_id, owner, checkpoint=batch.checkpoint, bytes_processed=batch.bytes_processed,
        processed=batch.processed, successful=batch.processed - rejected, rejected=rejected,
        failed_batches=0, error_counts=batch.error_counts, lease_seconds=lease_seconds)


def finish(conn: Conn, job_id: str, owner: str, outcome: Outcome) -> AnyJob | None:
    """Record how a run ended; ``None`` when the job was no longer ``owner``'s to finish."""
    row = STORE.finish(conn, job_id, owner, outcome.status,
                       failure_reason=outcome.failure_reason, record_count=outcome.record_count,
                       file_key=outcome.file_key, file_size_bytes=outcome.file_size_bytes,
                       expires_at=outcome.expires_at)
    return job_from_row(row) if row is not None else None


def fail(conn: Conn, job_id: str, owner: str, reason: str) -> AnyJob | None:
    """Finish the job as failed, with a reason people can act on."""
    return finish(conn, job_id, owner, Outcome(JobStatus.FAILED, failure_reason=reason))


def release(conn: Conn, job_id: str, owner: str) -> None:
    """Hand a running job back to the queue (graceful stop): another worker resumes it."""
    STORE.release(conn, job_id, owner)


def stopped(conn: Conn, job_id: str, owner: str) -> None:
    """A run stopped unfinished: hand the job back if it still runs, else, if it was
    cancelled, drop its lease (its last batch is in: the jobs waiting may start)."""
    release(conn, job_id, owner)
    STORE.end_cancelled(conn, job_id, owner)



# --- split imports: chunks (jobs/chunk_store.py) ----------------------------------------


def split(conn: Conn, job_id: str, owner: str, plan: Plan,
          defaults: Sequence[tuple[int, str]], lease_seconds: float) -> bool:
    """Store the chunks of a split import; False when ``owner`` no longer runs it."""
    return CHUNKS.plan(conn, job_id, owner, plan, defaults, lease_seconds)


def claim_chunk(conn: Conn, owner: str, lease_seconds: float, max_in_flight: int
                ) -> ChunkClaim | None:
    """Take the next chunk of a running split import (any instance's worker may)."""
    return CHUNKS.claim(conn, owner, lease_seconds, max_in_flight)


def renew_chunk(conn: Conn, job_id: str, seq: int, owner: str, lease_seconds: float
                ) -> JobStatus | None:
    """Extend a chunk's lease; ``None`` when it is no longer ``owner``'s or the job no
    longer runs (cancelled): the chunk stops at its next batch boundary."""
    return CHUNKS.renew(conn, job_id, seq, owner, lease_seconds)


def commit_chunk_batch(conn: Conn, job_id: str, seq: int, owner: str, batch: BatchProgress,
                       lease_seconds: float) -> JobStatus:
    """Record a chunk's batch, its counters added to the job's, in ``conn``'s transaction.

    :class:`~bulkport.errors.LeaseLost` when ``owner`` no longer holds the chunk.
    """
    return CHUNKS.commit_batch(conn, job_id, seq, owner, batch, lease_seconds)


def held_records(conn: Conn, job_id: str, after_row: int, limit: int
                 ) -> list[tuple[int, bytes]]:
    """The records a split import's chunks held back, after ``after_row``, in row order."""
    return CHUNKS.held_records(conn, job_id, after_row, limit)


def chunk_done(conn: Conn, job_id: str, seq: int, owner: str) -> bool:
    """Mark a chunk done; False when it was no longer ``owner``'s."""
    return CHUNKS.finish_chunk(conn, job_id, seq, owner)


def chunk_stopped(conn: Conn, job_id: str, seq: int, owner: str) -> None:
    """A chunk stopped unfinished: dropped when its job ended (cancelled), else kept
    for another worker (handed back when a graceful stop was asked)."""
    CHUNKS.drop(conn, job_id, owner)
    CHUNKS.release(conn, job_id, seq, owner)


def release_chunk(conn: Conn, job_id: str, seq: int, owner: str) -> None:
    """Hand a chunk back (graceful stop): another worker resumes it after its checkpoint."""
    CHUNKS.release(conn, job_id, seq, owner)


def finish_split(conn: Conn, job_id: str, seq: int, owner: str) -> ImportJob | None:
    """The tail is done: end the job with the status its aggregated counters give."""
    row = CHUNKS.finish_job(conn, job_id, seq, owner)
    return _import(row)


def fail_split(conn: Conn, job_id: str, seq: int, owner: str, reason: str
               ) -> ImportJob | None:
    """A chunk cannot be done: the whole job fails, with the reason."""
    row = CHUNKS.finish_job(conn, job_id, seq, owner, JobStatus.FAILED, reason)
    return _import(row)


def _import(row: dict[str, Any] | None) -> ImportJob | None:
    if row is None:
        return None
    job = job_from_row(row)
    assert isinstance(job, ImportJob)
    return job
