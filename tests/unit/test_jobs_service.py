"""The jobs service against the real PostgreSQL: every state change on typed records."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from bulkport import db
from bulkport.errors import Conflict, IdempotencyConflict, LeaseLost, NotFound
from bulkport.jobs import service
from bulkport.jobs.store import fingerprint
from bulkport.pipeline.progress import BatchProgress, Outcome, SourceFacts
from bulkport.pipeline.types import RecordError, Rejected
from bulkport.records import ExportJob, ImportJob
from bulkport.status import JobKind, JobStatus

LEASE = 30.0


def _import_values(**kw: Any) -> dict[str, Any]:
    return {"resource": "users", "format": "csv", "mode": "insert", "dry_run": False,
            "file_key": "k", "file_name": "users.csv", "file_size_bytes": 100,
            "source_url": None, "idempotency_key": None, "request_id": "req-1",
            "fingerprint": fingerprint(n=1), **kw}


def _export_values(**kw: Any) -> dict[str, Any]:
    return {"resource": "users", "format": "ndjson", "fields": None, "filters": Jsonb({}),
            "idempotency_key": None, "request_id": None, "fingerprint": fingerprint(e=1), **kw}


@pytest.fixture
def connect(clean_db: str) -> service.Connect:
    @contextmanager
    def conn() -> Iterator[psycopg.Connection[Any]]:
        with db.connect(clean_db, autocommit=True) as c:
            yield c

    return conn


def test_create_is_idempotent_per_kind_and_typed(conn: psycopg.Connection[Any],
                                                 clean_db: str) -> None:
    job, created = service.create(conn, JobKind.IMPORT, _import_values(idempotency_key="k1"))
    assert created and isinstance(job, ImportJob) and job.status is JobStatus.PENDING
    assert (job.processed_records, job.checkpoint, job.error_counts, job.waits_for) == (
        0, 0, {}, [])
    again, created = service.create(conn, JobKind.IMPORT, _import_values(idempotency_key="k1"))
    assert (again.id, created) == (job.id, False)
    with pytest.raises(IdempotencyConflict):
        service.create(conn, JobKind.IMPORT,
                       _import_values(idempotency_key="k1", fingerprint=fingerprint(n=2)))
    # The same key names another request for the other kind.
    export, created = service.create(conn, JobKind.EXPORT, _export_values(idempotency_key="k1"))
    assert created and isinstance(export, ExportJob) and export.id != job.id
    assert (export.record_count, export.compression, export.filters) == (0, "none", {})
    assert service.get(conn, JobKind.EXPORT, export.id) == export
    with pytest.raises(NotFound):
        service.get(conn, JobKind.IMPORT, export.id)
    assert [j.id for j in service.list_jobs(conn, JobKind.IMPORT, status=None, resource=None,
                                            limit=10, after=None)] == [job.id]


def test_claim_looks_at_the_first_kind_first(conn: psycopg.Connection[Any],
                                             clean_db: str) -> None:
    imp, _ = service.create(conn, JobKind.IMPORT, _import_values())
    exp, _ = service.create(conn, JobKind.EXPORT, _export_values())
    claimed = service.claim(conn, JobKind.EXPORT, "w1", LEASE)
    assert claimed is not None and (claimed.id, claimed.kind) == (exp.id, JobKind.EXPORT)
    assert (claimed.status, claimed.owner, claimed.attempts) == (JobStatus.PROCESSING, "w1", 1)
    # The export is taken: asking for exports first still yields the import.
    other = service.claim(conn, JobKind.EXPORT, "w2", LEASE)
    assert other is not None and other.id == imp.id
    assert service.claim(conn, JobKind.IMPORT, "w3", LEASE) is None
    stats = {(r["type"], r["status"]): r["jobs"] for r in service.queue_stats(conn)}
    assert stats == {("import", "processing"): 1, ("export", "processing"): 1}


def test_a_batch_commits_its_rejected_records_and_counters(conn: psycopg.Connection[Any],
                                                           clean_db: str) -> None:
    job, _ = service.create(conn, JobKind.IMPORT, _import_values())
    assert service.claim(conn, JobKind.IMPORT, "w", LEASE) is not None
    service.record_source(conn, job.id, "w", SourceFacts(format="csv", columns=["id", "email"],
                                                         file_key="k", file_size_bytes=100,
                                                         delimiter=";"))
    bad = Rejected(2, {"email": "x"}, [RecordError(2, "email", "x", "invalid_email_format",
                                                  "not an email")])
    batch = BatchProgress(checkpoint=3, bytes_processed=60, processed=3, rejected=[bad],
                          error_counts={"invalid_email_format": 1})
    with conn.transaction():
        assert service.commit_batch(conn, job.id, "w", batch, LEASE) is JobStatus.PROCESSING
    now = service.get(conn, JobKind.IMPORT, job.id)
    assert (now.checkpoint, now.processed_records, now.successful_records, now.error_records,
            now.error_counts, now.columns, now.delimiter) == (
        3, 3, 2, 1, {"invalid_email_format": 1}, ["id", "email"], ";")
    assert [r["row"] for r in service.import_errors(conn, job.id, after_row=0, limit=10)] == [2]
    later = BatchProgress(checkpoint=4, bytes_processed=80, processed=1, rejected=[],
                          error_counts={"invalid_email_format": 1})
    with pytest.raises(LeaseLost), conn.transaction():
        service.commit_batch(conn, job.id, "someone-else", later, LEASE)
    assert service.get(conn, JobKind.IMPORT, job.id).checkpoint == 3
    done = service.finish(conn, job.id, "w", Outcome(JobStatus.COMPLETED_WITH_ERRORS))
    assert done is not None and (done.status, done.total_records, done.file_key) == (
        JobStatus.COMPLETED_WITH_ERRORS, 3, "k")
    assert service.finish(conn, job.id, "w", Outcome(JobStatus.COMPLETED)) is None
    service.start_over(conn, job.id, "w")
    assert service.import_errors(conn, job.id, after_row=0, limit=10) == []


def test_finish_records_an_exports_file_and_fail_its_reason(conn: psycopg.Connection[Any],
                                                            clean_db: str) -> None:
    first, _ = service.create(conn, JobKind.EXPORT, _export_values())
    second, _ = service.create(conn, JobKind.EXPORT, _export_values())
    assert service.claim(conn, JobKind.EXPORT, "w", LEASE) is not None
    assert service.claim(conn, JobKind.EXPORT, "w", LEASE) is not None
    done = service.finish(conn, first.id, "w", Outcome(
        JobStatus.COMPLETED, record_count=7, file_key="export-1.ndjson", file_size_bytes=70))
    assert isinstance(done, ExportJob)
    assert (done.record_count, done.file_key, done.file_size_bytes, done.lease_expires_at) == (
        7, "export-1.ndjson", 70, None)
    failed = service.fail(conn, second.id, "w", "disk full")
    assert isinstance(failed, ExportJob)
    assert (failed.status, failed.failure_reason, failed.record_count, failed.file_key) == (
        JobStatus.FAILED, "disk full", 0, None)


def test_release_and_stop_hand_back_or_end_a_run(conn: psycopg.Connection[Any],
                                                 clean_db: str) -> None:
    job, _ = service.create(conn, JobKind.IMPORT, _import_values())
    assert service.claim(conn, JobKind.IMPORT, "w", LEASE) is not None
    assert service.renew(conn, job.id, "w", LEASE) is JobStatus.PROCESSING
    assert service.renew(conn, job.id, "other", LEASE) is None
    service.release(conn, job.id, "w")
    back = service.get(conn, JobKind.IMPORT, job.id)
    assert (back.status, back.owner, back.lease_expires_at) == (JobStatus.PENDING, None, None)
    assert service.claim(conn, JobKind.IMPORT, "w2", LEASE) is not None
    conn.execute("UPDATE jobs SET status = 'cancelled' WHERE id = %s", (job.id,))
    service.stopped(conn, job.id, "w2")  # cancelled while it ran: its lease goes
    assert service.get(conn, JobKind.IMPORT, job.id).lease_expires_at is None


def test_cancel_waits_for_the_batch_in_flight(connect: service.Connect) -> None:
    with connect() as conn:
        job, _ = service.create(conn, JobKind.IMPORT, _import_values())
        assert service.claim(conn, JobKind.IMPORT, "w", LEASE) is not None

    def commit_later() -> None:  # the worker's batch in flight commits after the cancel
        time.sleep(0.5)
        batch = BatchProgress(checkpoint=5, bytes_processed=50, processed=5, rejected=[],
                              error_counts={})
        with connect() as c, c.transaction():
            service.commit_batch(c, job.id, "w", batch, LEASE)

    thread = threading.Thread(target=commit_later)
    thread.start()
    started = time.monotonic()
    cancelled = service.cancel(connect, JobKind.IMPORT, job.id)
    thread.join()
    assert (cancelled.status, cancelled.checkpoint, cancelled.processed_records) == (
        JobStatus.CANCELLED, 5, 5)
    assert time.monotonic() - started < service.CANCEL_SETTLE_SECONDS
    with pytest.raises(Conflict):
        service.cancel(connect, JobKind.IMPORT, job.id)


def test_cancel_of_a_queued_job_returns_at_once(connect: service.Connect) -> None:
    with connect() as conn:
        job, _ = service.create(conn, JobKind.EXPORT, _export_values())
    started = time.monotonic()
    assert service.cancel(connect, JobKind.EXPORT, job.id).status is JobStatus.CANCELLED
    assert time.monotonic() - started < 1.0
