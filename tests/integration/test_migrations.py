"""Upgrading a database in use: jobs queued or running under 0001 keep working after 0002."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from bulkport import db
from bulkport.config import Settings
from bulkport.jobs.status import JobKind
from bulkport.jobs.store import STORE
from bulkport.storage import LocalStorage
from tests.conftest import get_job, run_jobs

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
