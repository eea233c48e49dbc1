"""Helpers of the reliability tests: real processes, exact comparisons, clean-up.

Every process a test starts is registered with :class:`Processes` and killed
(its whole process group) when the test ends, whatever happened. Results are
compared through :class:`Outcome`: the users table, each job's counters and its
error rows, with ids generated for id-less records left out (they are random).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from bulkport import db
from bulkport.config import Settings
from tests.conftest import ServerProcess, empty_tables, get_job, run_jobs, submit_import

#: Environment of every server and worker these tests start: short leases so that a
#: dead worker's job is taken over quickly, and batches small enough to be interrupted.
FAST_ENV = {
    "BULKPORT_LEASE_SECONDS": "2",
    "BULKPORT_POLL_INTERVAL_SECONDS": "0.1",
    "BULKPORT_BATCH_SIZE": "2000",
    "BULKPORT_LOG_LEVEL": "INFO",
}
BATCH_SIZE = 2000
TERMINAL = {"completed", "completed_with_errors", "failed", "cancelled"}
JOB_COUNTERS = ("status", "total_records", "processed_records", "successful_records",
                "error_records", "failed_batches", "error_counts", "failure_reason")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def kill_group(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to the process group led by ``proc`` (the server and its workers)."""
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    if sig == signal.SIGKILL:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)


def group_alive(pgid: int) -> list[int]:
    """Pids still alive in process group ``pgid`` (zombies excluded)."""
    alive = []
    for p in psutil.process_iter(["pid", "status"]):
        with contextlib.suppress(psutil.Error):
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(p.pid)
    return alive


class Server(ServerProcess):
    """``bulkport serve`` that can also be started without waiting for it to be ready."""

    def start_nowait(self) -> Server:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=self.log.open("ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self


class WorkerProcess:
    """``bulkport worker`` (workers only, no HTTP) as a real process."""

    def __init__(self, url: str, data_dir: Path, workers: int = 1,
                 env: dict[str, str] | None = None) -> None:
        self.env = {**os.environ, **FAST_ENV, **(env or {})}
        self.args = [sys.executable, "-m", "bulkport", "worker", "--data-dir", str(data_dir),
                     "--database-url", url, "--workers", str(workers)]
        self.log = data_dir.parent / f"worker-{id(self):x}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=self.log.open("ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self


class Processes:
    """Every server/worker process of one test; all process groups die at teardown."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.url = url
        self.tmp_path = tmp_path
        self.started: list[Server | WorkerProcess] = []

    def server(self, data_dir: Path | None = None, workers: int = 2,
               env: dict[str, str] | None = None, url: str | None = None) -> Server:
        srv = Server(url or self.url, data_dir or self.tmp_path / "data", workers,
                            env={**FAST_ENV, **(env or {})})
        self.started.append(srv)
        return srv

    def worker(self, data_dir: Path | None = None, workers: int = 1,
               env: dict[str, str] | None = None) -> WorkerProcess:
        wp = WorkerProcess(self.url, data_dir or self.tmp_path / "data", workers, env)
        self.started.append(wp)
        return wp

    def kill_all(self) -> None:
        for p in self.started:
            kill_group(p.proc)

    def full_logs(self) -> str:
        return "\n".join(p.log.read_text(errors="replace") for p in self.started
                         if p.log.exists())

    def logs(self) -> str:
        parts = []
        for p in self.started:
            if p.log.exists():
                parts.append(f"--- {p.log.name}\n{p.log.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)


@pytest.fixture
def procs(clean_db: str, tmp_path: Path) -> Iterator[Processes]:
    registry = Processes(clean_db, tmp_path)
    try:
        yield registry
    finally:
        registry.kill_all()


@pytest.fixture
def fast_settings(settings: Settings) -> Settings:
    """In-process settings matching FAST_ENV (for reference runs)."""
    return settings.model_copy(update={"batch_size": BATCH_SIZE, "lease_seconds": 2.0})


# --- exact comparison -------------------------------------------------------------------


@dataclass
class Outcome:
    """What an import leaves behind, comparable between two runs of the same files."""

    users: list[tuple[Any, ...]]
    jobs: list[dict[str, Any]]
    errors: list[list[tuple[Any, ...]]]

    def assert_equal(self, expected: Outcome) -> None:
        assert self.jobs == expected.jobs
        assert len(self.errors) == len(expected.errors)
        for got, want in zip(self.errors, expected.errors, strict=True):
            assert len(got) == len(want), "error rows differ in number"
            assert got == want
        assert len(self.users) == len(expected.users), "users table differs in size"
        missing = set(expected.users) - set(self.users)
        extra = set(self.users) - set(expected.users)
        assert not missing and not extra, (sorted(missing)[:5], sorted(extra)[:5])
        assert self.users == expected.users


def outcome(url: str, job_ids: list[str]) -> Outcome:
    """Read the users table and the given jobs (in that order) from the database."""
    with db.connect(url, autocommit=True) as c:
        # An id that is a UUID was generated (the test files never hold UUIDs).
        users = [tuple(r) for r in c.execute(
            "SELECT CASE WHEN id ~ '^[0-9a-f-]{36}$' THEN '<generated>' ELSE id END,"
            " lower(email), email, name, role, active, created_at, updated_at"
            " FROM users ORDER BY lower(email)")]
        errors = [[tuple(r) for r in c.execute(
            "SELECT row, record, errors FROM import_errors WHERE job_id = %s ORDER BY row",
            (job_id,))] for job_id in job_ids]
    jobs = []
    for job_id in job_ids:
        job = get_job(url, job_id)
        jobs.append({k: job[k] for k in JOB_COUNTERS})
    return Outcome(users, jobs, errors)


def truncate(url: str) -> None:
    with db.connect(url, autocommit=True) as c:
        empty_tables(c)


def reference(url: str, settings: Settings, files: list[tuple[Path, str]],
              mode: str = "insert") -> Outcome:
    """Import ``files`` without interruption in this process; return the outcome.

    The database is emptied before and after, so the run under test starts clean.
    """
    truncate(url)
    ids = []
    for path, resource in files:
        ids.append(submit_import(url, settings, path, resource, mode=mode))
        run_jobs(url, settings)
    result = outcome(url, ids)
    truncate(url)
    return result


def upload(base: str, path: Path, resource: str = "users", *, mode: str = "insert",
           key: str | None = None, fmt: str | None = None, name: str | None = None,
           timeout: float = 120) -> httpx.Response:
    """POST ``path`` to ``/v1/imports`` as a multipart upload."""
    data = {"resource": resource, "mode": mode}
    if fmt:
        data["format"] = fmt
    headers = {"Idempotency-Key": key} if key else {}
    with path.open("rb") as f:
        return httpx.post(f"{base}/v1/imports", data=data, headers=headers,
                          files={"file": (name or path.name, f)}, timeout=timeout)


def job_row(url: str, job_id: str) -> dict[str, Any]:
    return get_job(url, job_id)


def all_terminal(url: str, job_ids: list[str]) -> bool:
    return all(get_job(url, j)["status"] in TERMINAL for j in job_ids)
