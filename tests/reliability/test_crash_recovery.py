"""Crash recovery: SIGKILL of a whole server (workers included) at random moments.

The import must end exactly as an uninterrupted run of the same file would: the
same users rows, the same counters, the same error rows. Also: with two
instances on one database, killing the one that holds a job lets the other take
it over once the lease expires.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import psutil

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

#: Kills that land while an import is committing batches (SPEC: at least five).
KILLS = 6
SEED = int(os.environ.get("BULKPORT_CRASH_SEED", "20240601"))


def test_sigkill_at_random_moments_loses_nothing(procs: Processes, fast_settings: Settings,
                                                 tmp_path: Path) -> None:
    url = procs.url
    big = users_csv(tmp_path / "big.csv", 200_000, seed=31)
    small = users_csv(tmp_path / "small.csv", 20_000, seed=32, email_prefix="other")
    expected = reference(url, fast_settings, [(big, "users"), (small, "users")])

    rng = random.Random(SEED)
    srv = procs.server(workers=2).start()
    ids = [upload(srv.base, big).json()["job_id"], upload(srv.base, small).json()["job_id"]]
    kills = startup_kills = 0
    deadline = time.monotonic() + 180
    try:
        while kills < KILLS and not all_terminal(url, ids):
            assert time.monotonic() < deadline, "the import made no progress"
            before = get_job(url, ids[0])["processed_records"]
            # Wait for this incarnation to commit at least one batch of the big file,
            # then kill at a random moment (mid-batch, mid-commit, between batches).
            wait_until(lambda b=before: get_job(url, ids[0])["processed_records"] > b
                       or all_terminal(url, ids), 60, "progress after a restart")
            time.sleep(rng.uniform(0.0, 1.2))
            if all_terminal(url, ids):
                break
            kill_group(srv.proc)
            kills += 1
            assert srv.proc is not None
            srv.proc = None
            if rng.random() < 0.3:
                # Sometimes also die while starting up (migrations, pool spawn).
                srv.start_nowait()
                time.sleep(rng.uniform(0.05, 1.5))
                kill_group(srv.proc)
                startup_kills += 1
            srv.start()
        assert kills >= 5, f"only {kills} kills landed mid-import (file too small?)"
        wait_until(lambda: all_terminal(url, ids), 180, "every job to end")
    except AssertionError:
        print(procs.logs())
        raise

    got = outcome(url, ids)
    assert got.jobs[0]["status"] == "completed_with_errors"
    got.assert_equal(expected)
    with_owner = [get_job(url, j) for j in ids]
    assert all(j["lease_expires_at"] is None for j in with_owner)
    print(f"{kills} kills mid-import, {startup_kills} during start-up; seed {SEED}")


def _instance_of(pid: int, candidates: dict[str, int]) -> str:
    """Which instance (by name) the process ``pid`` belongs to (its process group)."""
    pgid = os.getpgid(pid)
    for name, leader in candidates.items():
        if pgid == leader:
            return name
    raise AssertionError(f"pid {pid} belongs to no instance ({candidates})")


def test_second_instance_takes_over_after_lease_expiry(procs: Processes,
                                                       fast_settings: Settings,
                                                       tmp_path: Path) -> None:
    url = procs.url
    path = users_csv(tmp_path / "users.csv", 30_000, seed=33)
    expected = reference(url, fast_settings, [(path, "users")])

    serve = procs.server(workers=1).start()
    worker = procs.worker(workers=1).start()
    assert serve.proc is not None and worker.proc is not None
    instances = {"serve": serve.proc.pid, "worker": worker.proc.pid}
    job_id = upload(serve.base, path).json()["job_id"]
    job = wait_until(lambda: (j := get_job(url, job_id))["processed_records"] >= BATCH_SIZE
                     and j, 60, "a committed batch")
    owner = job["owner"]
    host, pid, _ = owner.split(":", 2)
    assert host and psutil.pid_exists(int(pid))
    holder = _instance_of(int(pid), instances)
    survivor = "worker" if holder == "serve" else "serve"
    kill_group(serve.proc if holder == "serve" else worker.proc)
    killed_at = time.monotonic()

    try:
        job = wait_until(lambda: (j := get_job(url, job_id))["owner"] != owner and j, 30,
                         "another worker to claim the job")
        # Not before the lease ran out (2 s, renewed every 2/3 s while alive).
        assert time.monotonic() - killed_at > 1.0
        new_pid = int(job["owner"].split(":")[1])
        assert _instance_of(new_pid, instances) == survivor
        wait_until(lambda: all_terminal(url, [job_id]), 120, "the job to finish")
    except AssertionError:
        print(procs.logs())
        raise
    outcome(url, [job_id]).assert_equal(expected)
    assert get_job(url, job_id)["attempts"] >= 1
