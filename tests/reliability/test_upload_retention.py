"""Upload retention across a crash: with no retention at all, the job of a killed instance
keeps its file while the other instance takes it over, and loses it only once it ended."""

from __future__ import annotations

import time
from pathlib import Path

from bulkport.config import Settings
from tests.conftest import get_job
from tests.reliability.conftest import (
    BATCH_SIZE,
    Processes,
    all_terminal,
    kill_group,
    outcome,
    reference,
    upload,
    wait_until,
)
from tests.reliability.data import users_csv

NO_RETENTION = {"BULKPORT_UPLOAD_RETENTION_SECONDS": "0"}


def test_a_taken_over_job_keeps_its_file_until_it_ends(procs: Processes,
                                                       fast_settings: Settings,
                                                       tmp_path: Path) -> None:
    url = procs.url
    path = users_csv(tmp_path / "users.csv", 30_000, seed=35)
    expected = reference(url, fast_settings, [(path, "users")])
    data_dir = tmp_path / "shared"
    uploads = data_dir / "uploads"

    first = procs.server(data_dir, workers=1, env=NO_RETENTION).start()
    job_id = upload(first.base, path).json()["job_id"]
    wait_until(lambda: get_job(url, job_id)["processed_records"] >= BATCH_SIZE, 60,
               "a committed batch")
    kill_group(first.proc)
    key, owner = get_job(url, job_id)["file_key"], get_job(url, job_id)["owner"]
    assert (uploads / key).is_file()

    # The second instance sweeps at start and after every job while the first one's
    # job waits for its lease to run out, then takes it over and re-reads the file.
    procs.worker(data_dir, workers=2, env=NO_RETENTION).start()
    try:
        deadline = time.monotonic() + 120
        while not all_terminal(url, [job_id]):
            assert time.monotonic() < deadline, "the job did not finish"
            assert (uploads / key).is_file(), "the file went before the job ended"
            time.sleep(0.05)
        wait_until(lambda: not (uploads / key).exists(), 30, "the ended job's file to go")
    except AssertionError:
        print(procs.logs())
        raise
    job = get_job(url, job_id)
    assert job["owner"] != owner  # taken over, not finished by the killed instance
    assert job["file_deleted_at"] is not None
    outcome(url, [job_id]).assert_equal(expected)
