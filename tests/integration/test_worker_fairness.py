"""Queued imports do not starve exports: a worker takes turns between the two queues."""

from __future__ import annotations

from pathlib import Path

from psycopg.types.json import Jsonb

from bulkport import db
from bulkport.config import Settings
from bulkport.jobs.status import JobKind
from bulkport.jobs.store import STORE, fingerprint
from bulkport.jobs.worker import Worker
from tests.conftest import get_job, submit_import


def test_an_export_runs_while_imports_are_queued(clean_db: str, settings: Settings,
                                                 tmp_path: Path) -> None:
    users = tmp_path / "users.csv"
    users.write_text("email,name,role\na@example.com,A,admin\n")
    imports = [submit_import(clean_db, settings, users, "users") for _ in range(3)]
    with db.connect(clean_db, autocommit=True) as conn:
        export, _ = STORE.create(conn, JobKind.EXPORT, {
            "idempotency_key": None, "fingerprint": fingerprint(n=1), "request_id": None,
            "resource": "users", "format": "ndjson", "fields": None, "filters": Jsonb({})})
    worker = Worker(settings, clean_db, name="fair-worker")
    assert worker.run_once() and worker.run_once()
    assert get_job(clean_db, export["id"], JobKind.EXPORT)["status"] == "completed"
    done = [get_job(clean_db, j)["status"] for j in imports]
    assert done.count("pending") == 2
