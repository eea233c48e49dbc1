"""Races: concurrent duplicate requests, concurrent upserts, cancel mid-import.

One server (two workers) serves the module; each test starts from emptied
tables and waits for its own jobs.
"""

from __future__ import annotations

import csv
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, get_job
from tests.reliability.conftest import (
    BATCH_SIZE,
    FAST_ENV,
    all_terminal,
    kill_group,
    outcome,
    upload,
    wait_until,
)
from tests.reliability.data import BASE_TIME, HEADER, users_csv

CONCURRENT_REQUESTS = 50


@pytest.fixture(scope="module")
def race_server(pg_url: str, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("races") / "data"
    srv = ServerProcess(pg_url, data, workers=2,
                        env={**FAST_ENV, "BULKPORT_POOL_MAX_SIZE": "10"})
    try:
        yield srv.start()
    finally:
        srv.stop()
        kill_group(srv.proc)


@pytest.fixture
def srv(race_server: ServerProcess, clean_db: str) -> ServerProcess:
    return race_server


def _uploads(srv: ServerProcess) -> list[Path]:
    folder = Path(srv.args[srv.args.index("--data-dir") + 1]) / "uploads"
    return [p for p in folder.iterdir() if not p.name.endswith(".part")]


def test_concurrent_duplicates_create_one_job(srv: ServerProcess, clean_db: str,
                                              tmp_path: Path) -> None:
    path = users_csv(tmp_path / "users.csv", 200, seed=51)
    before = set(_uploads(srv))
    start = threading.Barrier(CONCURRENT_REQUESTS)

    def post(_: int) -> httpx.Response:
        start.wait(30)
        return upload(srv.base, path, key="same-key-51")

    with ThreadPoolExecutor(CONCURRENT_REQUESTS) as pool:
        responses = list(pool.map(post, range(CONCURRENT_REQUESTS)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * (CONCURRENT_REQUESTS - 1) + [202], codes
    assert len({r.json()["job_id"] for r in responses}) == 1
    with_location = [r for r in responses if r.headers.get("location")]
    assert len(with_location) == CONCURRENT_REQUESTS
    job_id = responses[0].json()["job_id"]
    rows = _count(clean_db, "SELECT count(*) FROM import_jobs")
    assert rows == 1
    # The replays did not leave 49 copies of the file behind.
    assert len(set(_uploads(srv)) - before) == 1

    other = users_csv(tmp_path / "other.csv", 200, seed=52)
    conflict = upload(srv.base, other, key="same-key-51")
    assert conflict.status_code == 409, conflict.text
    assert conflict.json()["error"] == "idempotency_conflict"
    assert len(set(_uploads(srv)) - before) == 1, "the refused upload was kept"
    srv.wait_job(job_id)


def _count(url: str, query: str) -> int:
    from bulkport import db

    with db.connect(url, autocommit=True) as c:
        row = c.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def _overlapping(path: Path, tag: str, numbers: list[int]) -> Path:
    """Users ``numbers`` (in this order) named after ``tag``; every 10th has no id."""
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(HEADER)
        for i in numbers:
            ts = BASE_TIME.replace(year=2024 if tag == "a" else 2025).isoformat()
            out.writerow(["" if i % 10 == 0 else f"u-{i}", f"user{i}@example.com",
                          f"{tag} {i}", ("admin", "author", "reader")[i % 3],
                          "true" if tag == "a" else "false", ts, ts])
    return path


def test_concurrent_upserts_over_the_same_users(srv: ServerProcess, clean_db: str,
                                                tmp_path: Path) -> None:
    a_rows = list(range(1, 30_001))
    b_rows = list(range(45_000, 15_000, -1))  # overlap 15,001-30,000, in reverse order
    a = _overlapping(tmp_path / "a.csv", "a", a_rows)
    b = _overlapping(tmp_path / "b.csv", "b", b_rows)
    ids = [upload(srv.base, a, mode="upsert").json()["job_id"],
           upload(srv.base, b, mode="upsert").json()["job_id"]]
    wait_until(lambda: all_terminal(clean_db, ids), 120, "both upserts to end")
    jobs = [get_job(clean_db, j) for j in ids]
    for job, rows in zip(jobs, (a_rows, b_rows), strict=True):
        assert job["status"] == "completed", (job["status"], job["error_counts"],
                                              job["failure_reason"])
        assert job["failed_batches"] == 0
        assert job["processed_records"] == job["successful_records"] == len(rows)
        # Deadlocks or lost leases would show as extra claims.
        assert job["attempts"] == 1, "the job was interrupted and claimed again"

    got = outcome(clean_db, [])
    assert len(got.users) == 45_000
    by_email = {u[1]: u for u in got.users}
    for i in range(1, 45_001):
        user = by_email[f"user{i}@example.com"]
        tag = user[3].split()[0]
        assert user[3] == f"{tag} {i}"
        if i <= 15_000:
            assert tag == "a"
        elif i > 30_000:
            assert tag == "b"
        # Whole rows come from one file: no mix of the two versions.
        assert user[5] is (tag == "a")
        assert user[6].year == (2024 if tag == "a" else 2025)
        assert user[0] == ("<generated>" if i % 10 == 0 and i > 30_000 else
                           user[0] if i % 10 == 0 else f"u-{i}")


def _records(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        reader = csv.reader(f)
        next(reader)
        return [r for r in reader if r]


def test_cancel_stops_at_a_batch_boundary(srv: ServerProcess, clean_db: str,
                                          tmp_path: Path) -> None:
    path = users_csv(tmp_path / "users.csv", 100_000, seed=53)
    job_id = upload(srv.base, path).json()["job_id"]
    wait_until(lambda: get_job(clean_db, job_id)["processed_records"] >= BATCH_SIZE, 60,
               "a committed batch")
    with srv.client() as client:
        cancelled = client.post(f"/v1/imports/{job_id}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        again = client.post(f"/v1/imports/{job_id}/cancel")
        assert again.status_code == 409
        assert again.json()["error"] == "conflict"
    # The batch in flight finishes; then the worker lets the job go.
    wait_until(lambda: f"import {job_id} cancelled at record" in srv.log.read_text(), 30,
               "the worker to stop")
    job = get_job(clean_db, job_id)
    assert job["status"] == "cancelled"
    processed = job["processed_records"]
    assert processed == job["checkpoint"] == job["successful_records"] + job["error_records"]
    assert 0 < processed < 100_000 and processed % BATCH_SIZE == 0

    result = outcome(clean_db, [job_id])
    error_rows = {row for row, _, _ in result.errors[0]}
    assert len(error_rows) == job["error_records"]
    expected = {rec[1].lower() for n, rec in enumerate(_records(path), start=1)
                if n <= processed and n not in error_rows}
    assert {u[1] for u in result.users} == expected
    assert len(result.users) == job["successful_records"]
