"""Uploads are deleted once their job has ended, after the retention (SPEC §5); the
rejected-record downloads do not need them, and unfinished jobs keep them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from bulkport.config import Settings
from bulkport.jobs import service
from bulkport.jobs.status import JobKind, JobStatus
from bulkport.jobs.store import STORE
from bulkport.jobs.sweep import sweep
from bulkport.pipeline.progress import Outcome
from bulkport.storage import LocalStorage
from tests.conftest import (
    USERS_HUGE,
    FileServer,
    ServerProcess,
    get_job,
    run_jobs,
    submit_import,
)


def _stored(settings: Settings) -> set[str]:
    return {p.name for p in settings.upload_dir.iterdir()}


def _downloads(client: httpx.Client, job_id: str) -> tuple[bytes, bytes]:
    got = [client.get(f"/v1/imports/{job_id}/errors", params={"format": f}) for f in
           ("csv", "ndjson")]
    assert [r.status_code for r in got] == [200, 200]
    return got[0].content, got[1].content


@pytest.fixture
def api(clean_db: str, settings: Settings) -> Iterator[httpx.Client]:
    """The API (no workers) on the data directory of ``settings``: jobs run in this process."""
    srv = ServerProcess(clean_db, settings.data_dir, workers=0).start()
    try:
        with srv.client() as client:
            yield client
    finally:
        srv.stop()


def test_uploads_go_when_the_job_ends_and_downloads_stay_the_same(
        clean_db: str, settings: Settings, api: httpx.Client) -> None:
    with USERS_HUGE.open("rb") as f:
        resp = api.post("/v1/imports", data={"resource": "users"},
                        files={"file": ("users.csv", f)})
    assert resp.status_code == 202
    job_id = resp.json()["job_id"]
    key = get_job(clean_db, job_id)["file_key"]
    assert _stored(settings) == {key}

    run_jobs(clean_db, settings)  # the default retention (an hour) keeps the file
    assert get_job(clean_db, job_id)["status"] == "completed_with_errors"
    assert _stored(settings) == {key}
    before = _downloads(api, job_id)
    rejected = get_job(clean_db, job_id)["error_records"]
    assert rejected > 0 and before[1].count(b"\n") == rejected

    run_jobs(clean_db, settings.model_copy(update={"upload_retention_seconds": 0}))
    assert _stored(settings) == set()
    job = get_job(clean_db, job_id)
    assert job["file_deleted_at"] is not None and job["file_key"] == key
    assert _downloads(api, job_id) == before
    assert api.get(f"/v1/imports/{job_id}").json()["error_records"] == rejected


def test_with_no_retention_the_worker_deletes_the_file_once_the_job_ends(
        clean_db: str, settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    path.write_text("id,email,name,role\nu1,a@example.com,A,admin\nu2,bad,B,reader\n")
    settings = settings.model_copy(update={"upload_retention_seconds": 0})
    job_id = submit_import(clean_db, settings, path, "users")
    run_jobs(clean_db, settings)  # the same loop that ran the job swept its file
    assert get_job(clean_db, job_id)["status"] == "completed_with_errors"
    assert _stored(settings) == set()


def test_file_url_downloads_go_too(clean_db: str, settings: Settings, api: httpx.Client
                                   ) -> None:
    files = FileServer()
    files.thread.start()
    try:
        files.body("/u.csv", b"id,email,name,role\nu1,a@example.com,A,admin\n")
        settings = settings.model_copy(update={"upload_retention_seconds": 0,
                                               "allow_private_urls": True})
        with psycopg.connect(clean_db, autocommit=True) as c:
            job_id = STORE.create(c, JobKind.IMPORT, {
                "resource": "users", "format": None, "mode": "insert", "dry_run": False,
                "file_key": None, "file_name": "u.csv", "file_size_bytes": None,
                "source_url": f"{files.base}/u.csv", "idempotency_key": None,
                "request_id": None, "fingerprint": "f"})[0]["id"]
        run_jobs(clean_db, settings)
    finally:
        files.httpd.shutdown()
    job = get_job(clean_db, job_id)
    assert (job["status"], job["successful_records"]) == ("completed", 1)
    assert job["file_key"] is not None and job["file_deleted_at"] is not None
    assert _stored(settings) == set()


def test_a_longer_retention_keeps_the_file_until_it_has_passed(
        clean_db: str, settings: Settings, conn: psycopg.Connection[Any], tmp_path: Path
        ) -> None:
    path = tmp_path / "u.csv"
    path.write_text("id,email,name,role\nu1,a@example.com,A,admin\n")
    settings = settings.model_copy(update={"upload_retention_seconds": 3600})
    job_id = submit_import(clean_db, settings, path, "users")
    run_jobs(clean_db, settings)
    storage = LocalStorage(settings.upload_dir)
    assert sweep(conn, JobKind.IMPORT, storage, retention_seconds=3600) == 0
    assert len(_stored(settings)) == 1
    conn.execute("UPDATE import_jobs SET completed_at = now() - interval '61 minutes'")
    assert sweep(conn, JobKind.IMPORT, storage, retention_seconds=3600) == 1
    assert _stored(settings) == set()
    assert get_job(clean_db, job_id)["file_deleted_at"] is not None


def test_unfinished_jobs_keep_their_files(clean_db: str, settings: Settings,
                                          conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    path.write_text("id,email,name,role\nu1,a@example.com,A,admin\n")
    storage = LocalStorage(settings.upload_dir)
    pending, running, crashed, cancelled = (
        submit_import(clean_db, settings, path, "users") for _ in range(4))
    # Claims take the oldest first: pending is left for last and stays pending.
    conn.execute("UPDATE import_jobs SET created_at = now() + interval '1 hour' WHERE id = %s",
                 (pending,))
    claimed = [STORE.claim(conn, JobKind.IMPORT, owner, lease)
               for owner, lease in (("alive", 30), ("dead", 0.3), ("canceller", 30))]
    assert [j["id"] for j in claimed if j] == [running, crashed, cancelled]
    STORE.cancel(conn, JobKind.IMPORT, cancelled)  # its last batch would still be in flight
    conn.execute("UPDATE import_jobs SET completed_at = now() - interval '1 day'")
    time.sleep(0.5)  # the dead worker's lease ran out

    assert sweep(conn, JobKind.IMPORT, storage, retention_seconds=0) == 0
    assert len(_stored(settings)) == 4
    # The crashed worker's job is taken over: still running, so its file stays.
    again = STORE.claim(conn, JobKind.IMPORT, "heir", 30)
    assert again is not None and again["id"] == crashed
    assert sweep(conn, JobKind.IMPORT, storage, retention_seconds=0) == 0
    assert len(_stored(settings)) == 4
    # Once each has ended (the cancelled one's worker done with it), its file goes.
    service.finish(conn, crashed, "heir", Outcome(JobStatus.COMPLETED))
    service.stopped(conn, cancelled, "canceller")
    assert sweep(conn, JobKind.IMPORT, storage, retention_seconds=0) == 2
    assert len(_stored(settings)) == 2
    assert {get_job(clean_db, j)["file_deleted_at"] is None
            for j in (pending, running)} == {True}
