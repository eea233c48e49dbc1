"""Upgrading a database in use: jobs queued or running under 0001 keep working after 0002."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from bulkport import db
from bulkport.config import Settings
from bulkport.jobs import service
from bulkport.jobs.status import JobKind
from bulkport.jobs.store import STORE
from bulkport.storage import LocalStorage
from tests.conftest import get_job, run_jobs, submit_import

DB_NAME = "bulkport_test_upgrade"


@pytest.fixture
def old_db(pg_url: str) -> Iterator[str]:
    """A database holding only the first migration."""
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {DB_NAME}")
    url = make_conninfo(pg_url, dbname=DB_NAME)
    name, text = db._migration_files()[0]
    assert name == "0001_initial.sql"
    with db.connect(url, autocommit=True) as c:
        c.execute(text.encode())
        c.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY,"
                  " applied_at timestamptz NOT NULL DEFAULT now())")
        c.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (name,))
    try:
        yield url
    finally:
        with psycopg.connect(pg_url, autocommit=True) as c:
            c.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")


def _old_job(c: psycopg.Connection[object], job_id: str, resource: str, key: str,
             status: str, lease: str | None) -> None:
    """A job row as 0001's insert statement wrote it."""
    c.execute(
        "INSERT INTO import_jobs (id, fingerprint, resource, mode, status, file_key, file_name,"
        " owner, lease_expires_at, created_at)"
        " VALUES (%s, 'f', %s, 'insert', %s, %s, 'x.csv', %s, now() + %s::interval,"
        " now() - interval '1 minute' + %s::interval)",
        (job_id, resource, status, key, "gone" if lease else None, lease,
         f"{len(job_id)} seconds"))


def test_pending_and_processing_jobs_survive_the_upgrade(old_db: str, settings: Settings,
                                                        tmp_path: Path) -> None:
    storage = LocalStorage(settings.upload_dir)
    users = tmp_path / "users.csv"
    users.write_text("id,email,name,role\nu1,a@example.com,A,admin\nu2,b@example.com,B,reader\n")
    comments = tmp_path / "comments.csv"
    comments.write_text("id,body,article_id,user_id\nc1,hi,a1,u1\n")
    keys = [storage.save(iter([p.read_bytes()]), max_bytes=1 << 20).key
            for p in (users, comments)]
    with db.connect(old_db, autocommit=True) as c:
        # A comments job a crashed worker held (expired lease), then a pending users job
        # submitted after it, and a cancelled job whose lease was left to expire.
        _old_job(c, "j1", "comments", keys[1], "processing", "-1 minute")
        _old_job(c, "j22", "users", keys[0], "pending", None)
        _old_job(c, "j333", "users", keys[0], "cancelled", "-1 minute")

    # Every migration after 0001 applies, in order (0002 is the load-order one).
    later = [name for name, _ in db._migration_files() if not name.startswith("0001")]
    assert later[0] == "0002_load_order_and_upload_retention.sql"
    assert db.migrate(old_db) == later

    with db.connect(old_db, autocommit=True) as c:
        rows = c.execute("SELECT id, waits_for, file_deleted_at, lease_expires_at"
                         " FROM import_jobs ORDER BY id").fetchall()
        assert rows == [("j1", [], None, rows[0][3]), ("j22", [], None, None),
                        ("j333", [], None, None)]
        # Old jobs wait for nothing: the crashed comments job is taken over first.
        assert STORE.waiting_for(c, [STORE.get(c, JobKind.IMPORT, "j22")]) == {}
    run_jobs(old_db, settings)
    assert get_job(old_db, "j1")["status"] == "completed_with_errors"  # article a1: none
    assert get_job(old_db, "j22")["status"] == "completed"
    with db.connect(old_db, autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM users").fetchone() == (2,)


USERS = ("id,email,name,role\n"
         "u1,a@example.com,A,admin\nu2,b@example.com,B,reader\nu3,c@example.com,C,reader\n"
         "u4,d@example.com,D,wizard\nu5,e@example.com,E,admin\nu6,not-an-email,F,admin\n")
#: The columns of an import's outcome that a resumed run must end with as an uninterrupted one.
OUTCOME = ("status", "total_records", "processed_records", "successful_records", "error_records",
           "failed_batches", "error_counts", "checkpoint")


def _outcome(url: str, job_id: str) -> tuple[dict[str, object], list[tuple[object, ...]],
                                            list[tuple[object, ...]]]:
    job = get_job(url, job_id)
    with db.connect(url, autocommit=True) as c:
        users = c.execute("SELECT id, email, name, role, active FROM users ORDER BY id").fetchall()
        errors = c.execute("SELECT row, record, errors FROM import_errors WHERE job_id = %s"
                           " ORDER BY row", (job_id,)).fetchall()
    return {k: job[k] for k in OUTCOME}, users, errors


def test_jobs_of_both_kinds_survive_the_move_to_one_queue(
        old_db: str, clean_db: str, settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text(USERS)
    # What an uninterrupted run of the file ends with (in another, current database).
    reference = submit_import(clean_db, settings, path, "users")
    run_jobs(clean_db, settings)
    expected = _outcome(clean_db, reference)
    first_error = expected[2][0][0]  # u4: the records before it were committed by the crash
    assert isinstance(first_error, int)

    key = LocalStorage(settings.upload_dir).save(iter([USERS.encode()]), max_bytes=1 << 20).key
    offset = len("".join(USERS.splitlines(keepends=True)[:4]).encode())
    with db.connect(old_db, autocommit=True) as c:
        # A worker crashed mid-way: three records committed with their checkpoint,
        # its lease expired. Then a pending and a finished import, and two exports.
        c.execute("INSERT INTO users (id, email, name, role) VALUES"
                  " ('u1', 'a@example.com', 'A', 'admin'), ('u2', 'b@example.com', 'B', 'reader'),"
                  " ('u3', 'c@example.com', 'C', 'reader')")
        c.execute("INSERT INTO import_jobs (id, fingerprint, resource, mode, status, file_key,"
                  " file_name, file_size_bytes, format, owner, lease_expires_at, attempts,"
                  " started_at, checkpoint, bytes_processed, processed_records,"
                  " successful_records, created_at) VALUES ('crashed', 'f', 'users', 'insert',"
                  " 'processing', %s, 'users.csv', %s, 'csv', 'gone', now() - interval '1 minute',"
                  " 1, now(), %s, %s, 3, 3, now() - interval '3 minutes')",
                  (key, len(USERS), first_error - 1, offset))
        c.execute("INSERT INTO import_jobs (id, fingerprint, resource, mode, status, file_key,"
                  " file_name, created_at) VALUES ('queued', 'g', 'users', 'upsert', 'pending', %s,"
                  " 'users.csv', now() - interval '2 minutes')", (key,))
        c.execute("INSERT INTO import_jobs (id, idempotency_key, fingerprint, resource, mode,"
                  " status, processed_records, successful_records, total_records, completed_at)"
                  " VALUES ('done', 'k1', 'h', 'users', 'insert', 'completed', 7, 7, 7, now())")
        c.execute("INSERT INTO export_jobs (id, idempotency_key, fingerprint, resource, format,"
                  " status, record_count, file_key, completed_at, expires_at) VALUES"
                  " ('exported', 'k1', 'i', 'users', 'csv', 'completed', 5, 'export-x.csv', now(),"
                  " now() + interval '1 day')")
        c.execute("INSERT INTO export_jobs (id, fingerprint, resource, format, status, created_at)"
                  " VALUES ('to-export', 'j', 'users', 'ndjson', 'pending',"
                  " now() - interval '1 minute')")

    db.migrate(old_db)

    with db.connect(old_db, autocommit=True) as c:
        imports = service.list_jobs(c, JobKind.IMPORT, status=None, resource=None, limit=10,
                                    after=None)
        exports = service.list_jobs(c, JobKind.EXPORT, status=None, resource=None, limit=10,
                                    after=None)
    assert {j.id: j.status for j in imports} == {
        "crashed": "processing", "queued": "pending", "done": "completed"}
    assert {j.id: j.status for j in exports} == {"exported": "completed",
                                                "to-export": "pending"}
    done = get_job(old_db, "done")
    assert (done["processed_records"], done["error_records"], done["error_counts"]) == (7, 0, {})
    exported = get_job(old_db, "exported", JobKind.EXPORT)
    assert (exported["record_count"], exported["compression"]) == (5, "none")

    run_jobs(old_db, settings)
    # The crashed import resumed at its checkpoint: the same counters, users and
    # rejected records as the uninterrupted run, no record loaded twice.
    assert _outcome(old_db, "crashed") == expected
    assert get_job(old_db, "queued")["status"] == "completed_with_errors"
    to_export = get_job(old_db, "to-export", JobKind.EXPORT)
    # It ran before, between or after the imports: it saw the 3 committed users or all 4.
    assert (to_export["status"], to_export["record_count"] in (3, 4)) == ("completed", True)
