"""The API keeps each import's encoded first errors (api/first_errors.py): never stale.

A status read sends the version of the errors the API holds, ``(error_records,
updated_at)``, and PostgreSQL reads them again only when the job moved on.
These tests write errors the way the importer does (its store methods, in its
transactions) between reads of the real app, and check that every read shows
what is committed: a batch's new errors, errors of a lower row committed later
(a later round), a dry run restarting that deletes them, a cancelled job.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi.testclient import TestClient

from bulkport import db
from bulkport.api.first_errors import Cached, FirstErrorsCache, known
from bulkport.jobs.status import JobKind
from bulkport.jobs.store import STORE
from bulkport.pipeline.types import RecordError, Rejected
from tests.ops.conftest import AppClient

OWNER = "test-worker"
CSV = b"email,name,role\n" + b"".join(b"u%d@example.com,User,reader\n" % i for i in range(9))


@contextmanager
def claimed_import(app_client: AppClient, url: str) -> Iterator[tuple[TestClient, str]]:
    """The app, and an import job this test holds as its worker would."""
    with app_client(pool_min_size=1, pool_max_size=1) as client:
        resp = client.post("/v1/imports", data={"resource": "users"},
                           files={"file": ("u.csv", CSV, "text/csv")})
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["job_id"]
        with db.connect(url, autocommit=True) as conn:
            job = STORE.claim(conn, JobKind.IMPORT, OWNER, 60)
        assert job is not None and job["id"] == job_id
        yield client, job_id


def commit_batch(url: str, job_id: str, rows: list[int], *, processed: int) -> None:
    """One batch as the importer commits it: its error rows and progress together."""
    rejected = [Rejected(r, {"email": f"bad-{r}"}, [RecordError(
        r, "email", f"bad-{r}", "invalid_email_format", "not an email address")])
        for r in rows]
    with db.connect(url) as conn, conn.transaction():
        STORE.write_import_errors(conn, job_id, rejected)
        STORE.commit_import_batch(conn, job_id, OWNER, checkpoint=processed, bytes_processed=0,
                                  processed=processed, successful=processed - len(rows),
                                  rejected=len(rows), failed_batches=0,
                                  error_counts={"invalid_email_format": len(rows)},
                                  lease_seconds=60)


def status(client: TestClient, job_id: str) -> dict[str, Any]:
    resp = client.get(f"/v1/imports/{job_id}")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def error_rows(client: TestClient, job_id: str) -> list[int]:
    return [e["row"] for e in status(client, job_id)["errors"]]


def test_a_committed_batch_shows_its_errors(clean_db: str, app_client: AppClient) -> None:
    with claimed_import(app_client, clean_db) as (client, job_id):
        commit_batch(clean_db, job_id, [2, 3], processed=3)
        assert error_rows(client, job_id) == [2, 3]
        assert error_rows(client, job_id) == [2, 3]  # from the cache
        cache = client.app.state.bulkport.first_errors  # type: ignore[attr-defined]
        assert cache.get(job_id) is not None
        commit_batch(clean_db, job_id, [5], processed=3)
        assert error_rows(client, job_id) == [2, 3, 5]
        # A later round committing a lower row: the order is the rows', not the commits'.
        commit_batch(clean_db, job_id, [1], processed=0)
        body = status(client, job_id)
        assert [e["row"] for e in body["errors"]] == [1, 2, 3, 5]
        assert body["error_records"] == 4


def test_a_restarting_dry_run_shows_no_stale_errors(clean_db: str,
                                                     app_client: AppClient) -> None:
    with claimed_import(app_client, clean_db) as (client, job_id):
        commit_batch(clean_db, job_id, [4, 6], processed=6)
        assert error_rows(client, job_id) == [4, 6]
        # The run starts over and reaches the same count of errors, other rows.
        with db.connect(clean_db, autocommit=True) as conn:  # as the importer does
            STORE.reset_import_progress(conn, job_id, OWNER)
        commit_batch(clean_db, job_id, [7, 8], processed=8)
        body = status(client, job_id)
        assert ([e["row"] for e in body["errors"]], body["error_records"]) == ([7, 8], 2)
        with db.connect(clean_db, autocommit=True) as conn:
            STORE.reset_import_progress(conn, job_id, OWNER)
        body = status(client, job_id)
        assert (body["errors"], body["error_records"], body["processed_records"]) == ([], 0, 0)


def test_a_cancelled_job_shows_its_final_state(clean_db: str, app_client: AppClient) -> None:
    with claimed_import(app_client, clean_db) as (client, job_id):
        commit_batch(clean_db, job_id, [1], processed=2)
        before = status(client, job_id)
        assert (before["status"], [e["row"] for e in before["errors"]]) == ("processing", [1])
        with db.connect(clean_db, autocommit=True) as conn:
            STORE.cancel(conn, JobKind.IMPORT, job_id)
        commit_batch(clean_db, job_id, [3], processed=2)  # the batch in flight still commits
        after = status(client, job_id)
        assert after["status"] == "cancelled"
        assert (after["processed_records"], after["error_records"]) == (4, 2)
        assert [e["row"] for e in after["errors"]] == [1, 3]


def test_the_status_query_skips_errors_only_for_the_held_version(clean_db: str,
                                                                  app_client: AppClient) -> None:
    with claimed_import(app_client, clean_db) as (_client, job_id):
        commit_batch(clean_db, job_id, [2], processed=2)
        with db.connect(clean_db, autocommit=True) as conn:
            job = STORE.import_status(conn, job_id, first_errors=100)
            assert [r["row"] for r in job["first_errors"]] == [2]
            held = Cached(job["error_records"], job["updated_at"], orjson.Fragment(b"[]"))
            assert STORE.import_status(conn, job_id, first_errors=100,
                                       known=known(held))["first_errors"] is None
            other = Cached(job["error_records"], datetime.now(UTC), orjson.Fragment(b"[]"))
            assert STORE.import_status(conn, job_id, first_errors=100,
                                       known=known(other))["first_errors"] is not None


def test_the_cache_is_bounded_and_keeps_the_recently_read() -> None:
    cache = FirstErrorsCache(max_jobs=2)
    item = Cached(0, datetime.now(UTC), orjson.Fragment(b"[]"))
    cache.put("a", item)
    cache.put("b", item)
    assert cache.get("a") is item  # now the most recent
    cache.put("c", item)
    assert (len(cache), cache.get("b"), cache.get("a"), cache.get("c")) == (2, None, item, item)
