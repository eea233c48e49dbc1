"""Load order as a queue rule (SPEC §4): a job waits for earlier jobs of the resources it
references, unless it opts out; failed, cancelled and dry-run parents hold nothing back."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bulkport import db
from bulkport.config import Settings
from bulkport.gen import FILE_NAMES, GenConfig, generate
from bulkport.jobs import service
from bulkport.jobs.status import JobKind, JobStatus
from bulkport.jobs.store import STORE
from bulkport.jobs.worker import Worker
from bulkport.resources import RESOURCES
from tests.conftest import USERS_HUGE, get_job, submit_import, worker_threads

TERMINAL = {s.value for s in JobStatus if s.terminal}


def _claim(conn: psycopg.Connection[Any], owner: str = "w") -> str | None:
    job = STORE.claim(conn, JobKind.IMPORT, owner, 30)
    return None if job is None else str(job["id"])


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """Any readable file: these tests claim jobs, they never run them."""
    path = tmp_path / "one.csv"
    path.write_text("id,email,name,role\nu1,a@example.com,A,admin\n")
    return path


def test_parents_come_from_the_resource_declarations() -> None:
    assert {name: r.parents for name, r in RESOURCES.items()} == {
        "users": [], "articles": ["users"], "comments": ["articles", "users"]}


def test_full_load_submitted_at_once_equals_a_sequential_load(
        clean_db: str, settings: Settings, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    """users, articles, comments submitted together, three workers: no false reference errors."""
    expected = generate(GenConfig(out_dir=tmp_path / "gen", users_file=USERS_HUGE))
    paths = {"users": USERS_HUGE, "articles": tmp_path / "gen" / FILE_NAMES["articles"],
             "comments": tmp_path / "gen" / FILE_NAMES["comments"]}
    ids = {r: submit_import(clean_db, settings, paths[r], r)
           for r in ("users", "articles", "comments")}
    assert STORE.waiting_for(conn, [get_job(clean_db, i) for i in ids.values()]) == {
        ids["articles"]: [ids["users"]], ids["comments"]: [ids["users"], ids["articles"]]}

    settings = settings.model_copy(update={"batch_size": 2000})
    deadline = time.monotonic() + 300
    with worker_threads(settings, clean_db, 3):
        while {get_job(clean_db, i)["status"] for i in ids.values()} - TERMINAL:
            assert time.monotonic() < deadline, "the load did not finish"
            time.sleep(0.2)

    users = get_job(clean_db, ids["users"])
    assert users["successful_records"] == 9667
    for resource in ("articles", "comments"):
        job, want = get_job(clean_db, ids[resource]), expected[resource]
        assert (job["successful_records"], job["error_records"]) == (
            want["successful"], want["rejected"]), resource
        assert job["error_counts"] == want["error_counts"], resource
    assert conn.execute("SELECT count(*) FROM comments").fetchone() == (
        expected["comments"]["successful"],)
    # Each child started only once its parents had ended.
    assert get_job(clean_db, ids["articles"])["started_at"] >= users["completed_at"]
    assert get_job(clean_db, ids["comments"])["started_at"] >= get_job(
        clean_db, ids["articles"])["completed_at"]


@pytest.fixture
def locked_users(clean_db: str, settings: Settings, small: Path) -> Iterator[str]:
    """A pending users job that claims skip (its row is locked), so it stays pending."""
    users = submit_import(clean_db, settings, small, "users")
    with db.connect(clean_db) as locker:
        locker.execute("SELECT 1 FROM import_jobs WHERE id = %s FOR UPDATE", (users,))
        yield users


@pytest.mark.parametrize("wait", [True, False])
def test_wait_for_parents_false_starts_at_once(clean_db: str, settings: Settings, small: Path,
                                               conn: psycopg.Connection[Any], locked_users: str,
                                               wait: bool) -> None:
    comments = submit_import(clean_db, settings, small, "comments", wait_for_parents=wait)
    assert get_job(clean_db, locked_users)["status"] == "pending"
    assert _claim(conn) == (None if wait else comments)
    waiting = STORE.waiting_for(conn, [get_job(clean_db, comments)])
    assert waiting == ({comments: [locked_users]} if wait else {})


def test_a_waiting_job_does_not_hold_back_the_jobs_behind_it(
        clean_db: str, settings: Settings, small: Path, conn: psycopg.Connection[Any]) -> None:
    users = submit_import(clean_db, settings, small, "users")
    submit_import(clean_db, settings, small, "comments")
    later_users = submit_import(clean_db, settings, small, "users")
    assert _claim(conn) == users
    assert _claim(conn) == later_users  # the comments job waits; the users job behind it runs
    assert _claim(conn) is None


@pytest.mark.parametrize("end", ["fail", "cancel_pending", "cancel_processing"])
def test_a_failed_or_cancelled_parent_releases_the_child(
        clean_db: str, settings: Settings, small: Path, conn: psycopg.Connection[Any],
        end: str) -> None:
    users = submit_import(clean_db, settings, small, "users")
    comments = submit_import(clean_db, settings, small, "comments")
    if end == "cancel_pending":
        assert STORE.waiting_for(conn, [get_job(clean_db, comments)]) == {comments: [users]}
        STORE.cancel(conn, JobKind.IMPORT, users)
        assert STORE.waiting_for(conn, [get_job(clean_db, comments)]) == {}
        assert _claim(conn) == comments
        return
    assert _claim(conn) == users
    assert _claim(conn) is None  # the parent is processing
    if end == "fail":
        service.fail(conn, users, "w", "x")
    else:
        STORE.cancel(conn, JobKind.IMPORT, users)
        # The batch in flight of a cancelled job still commits: the child waits for it...
        assert _claim(conn) is None
        assert STORE.waiting_for(conn, [get_job(clean_db, comments)]) == {comments: [users]}
        # ... until the parent's worker is done with it.
        service.stopped(conn, users, "w")
    assert _claim(conn) == comments


def test_a_cancelled_parent_whose_worker_died_releases_the_child_at_lease_expiry(
        clean_db: str, settings: Settings, small: Path, conn: psycopg.Connection[Any]) -> None:
    users = submit_import(clean_db, settings, small, "users")
    comments = submit_import(clean_db, settings, small, "comments")
    assert STORE.claim(conn, JobKind.IMPORT, "dead", 0.5) is not None
    STORE.cancel(conn, JobKind.IMPORT, users)
    assert _claim(conn) is None
    time.sleep(1.0)
    assert _claim(conn) == comments


def test_a_dry_run_parent_holds_nothing_back(clean_db: str, settings: Settings, small: Path,
                                             conn: psycopg.Connection[Any]) -> None:
    users = submit_import(clean_db, settings, small, "users", dry_run=True)
    comments = submit_import(clean_db, settings, small, "comments", dry_run=True)
    assert _claim(conn) == users
    assert _claim(conn) == comments  # a dry-run parent writes nothing: nothing to wait for
    # A dry-run child waits for a real parent: its reference checks read the parent's rows.
    real = submit_import(clean_db, settings, small, "users")
    submit_import(clean_db, settings, small, "articles", dry_run=True)
    assert _claim(conn) == real
    assert _claim(conn) is None


def test_the_worker_lets_the_child_of_a_job_cancelled_mid_run_start(
        clean_db: str, settings: Settings, conn: psycopg.Connection[Any],
        tmp_path: Path) -> None:
    """Through the worker loop: the cancelled job's worker releases its children."""
    users = submit_import(clean_db, settings, USERS_HUGE, "users")
    comments = submit_import(clean_db, settings, USERS_HUGE, "comments")
    settings = settings.model_copy(update={"batch_size": 100})
    worker = Worker(settings, clean_db, name="w")
    thread = threading.Thread(target=worker.run_once)
    thread.start()
    deadline = time.monotonic() + 60
    while get_job(clean_db, users)["processed_records"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert _claim(conn) is None  # the child waits while its parent runs
    STORE.cancel(conn, JobKind.IMPORT, users)
    thread.join(60)
    assert not thread.is_alive()
    assert get_job(clean_db, users)["status"] == "cancelled"
    assert _claim(conn) == comments  # at once, not after the lease (5 s) ran out
