"""Graceful shutdown: SIGTERM finishes the batch in flight, hands the job back, exits.

Nothing stays ``processing`` and no process of the server outlives it; another
server then resumes the job after the last committed batch, with exact results.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from bulkport.config import Settings
from bulkport.jobs.worker import MAX_ATTEMPTS, Worker
from tests.conftest import get_job, submit_import
from tests.reliability.conftest import (
    BATCH_SIZE,
    Processes,
    group_alive,
    kill_group,
    outcome,
    reference,
    upload,
    wait_until,
)
from tests.reliability.data import users_csv

#: How long a server may take to stop after SIGTERM (the batch in flight is short).
STOP_BOUND_SECONDS = 20
ROWS = 40_000


def test_sigterm_hands_the_job_back_and_exits(procs: Processes, fast_settings: Settings,
                                              tmp_path: Path) -> None:
    url = procs.url
    path = users_csv(tmp_path / "users.csv", ROWS, seed=21)
    expected = reference(url, fast_settings, [(path, "users")])

    srv = procs.server(workers=2).start()
    job_id = upload(srv.base, path).json()["job_id"]
    wait_until(lambda: get_job(url, job_id)["processed_records"] >= 2 * BATCH_SIZE, 60,
               "two committed batches")
    assert srv.proc is not None
    pgid = srv.proc.pid
    assert len(group_alive(pgid)) >= 3, "expected the server and its worker processes"
    started = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    try:
        srv.proc.wait(STOP_BOUND_SECONDS)
        wait_until(lambda: not group_alive(pgid), STOP_BOUND_SECONDS,
                   "every worker process to exit")
    finally:
        kill_group(srv.proc)
    assert time.monotonic() - started < STOP_BOUND_SECONDS

    job = get_job(url, job_id)
    assert job["status"] == "pending", "the job was not handed back"
    assert job["owner"] is None and job["lease_expires_at"] is None
    assert 0 < job["checkpoint"] < ROWS
    assert job["processed_records"] == job["successful_records"] + job["error_records"]
    # Stopped at a batch boundary: every committed batch is whole.
    assert job["processed_records"] % BATCH_SIZE == 0
    partial = outcome(url, [job_id])
    assert len(partial.users) == job["successful_records"]
    assert len(partial.errors[0]) == job["error_records"]

    # Another server resumes it at once (no lease to wait for) and ends exactly as an
    # uninterrupted run would.
    again = procs.server(workers=1).start()
    wait_until(lambda: get_job(url, job_id)["status"] not in ("pending", "processing"), 120,
               "the resumed job to finish")
    outcome(url, [job_id]).assert_equal(expected)
    again.stop()


def test_hand_backs_do_not_count_as_failed_attempts(clean_db: str, settings: Settings,
                                                    tmp_path: Path) -> None:
    """A long import survives more graceful restarts (deploys) than MAX_ATTEMPTS."""
    batches = MAX_ATTEMPTS + 3
    path = users_csv(tmp_path / "users.csv", batches * 100, seed=22)
    small = settings.model_copy(update={"batch_size": 100})
    job_id = submit_import(clean_db, small, path, "users")
    for _ in range(batches + 2):
        worker = Worker(small, clean_db, name=f"deploy-{_}")
        worker.stopping.set()  # stop after the first batch, as SIGTERM would
        worker.run_once()
        if get_job(clean_db, job_id)["status"] != "pending":
            break
    job = get_job(clean_db, job_id)
    assert job["status"] == "completed_with_errors", job["failure_reason"]
    assert job["processed_records"] == batches * 100
