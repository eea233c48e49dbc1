"""Shared fixtures: a real PostgreSQL (embedded pgserver) and a real server process.

Set ``BULKPORT_TEST_DATABASE_URL`` to run against another PostgreSQL instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from bulkport import db
from bulkport.config import Settings
from bulkport.jobs import service
from bulkport.jobs.status import JobKind
from bulkport.jobs.store import fingerprint
from bulkport.jobs.worker import Worker
from bulkport.storage import LocalStorage

REPO = Path(__file__).resolve().parent.parent
TESTDATA = REPO / "tests" / "data"
# The public evaluation file (10,000 users with known flaws); see tests/data/README.md.
USERS_HUGE = TESTDATA / "users_huge.csv"
if not USERS_HUGE.is_file():  # fail loudly: a missing data file must never become a skip
    raise RuntimeError(f"test data missing: {USERS_HUGE}")
TABLES = ("import_errors", "jobs", "comments", "articles", "users",
          "rate_limit_buckets")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    url = os.environ.get("BULKPORT_TEST_DATABASE_URL")
    if url:
        db.migrate(url)
        yield url
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    tmp = Path(tempfile.mkdtemp(prefix="bulkport-test-pg-"))
    os.environ.setdefault("XDG_RUNTIME_DIR", str(tmp))
    server = pgserver.get_server(tmp / "pg", cleanup_mode="delete")
    url = server.get_uri()
    db.migrate(url)
    yield url
    server.cleanup()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def conn(pg_url: str) -> Iterator[psycopg.Connection[Any]]:
    with db.connect(pg_url, autocommit=True) as c:
        yield c


@pytest.fixture
def clean_db(pg_url: str) -> str:
    """An emptied database (tables kept, rows gone)."""
    with db.connect(pg_url, autocommit=True) as c:
        c.execute("TRUNCATE " + ", ".join(TABLES) + " CASCADE")
    return pg_url


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", lease_seconds=5, poll_interval_seconds=0.1)


def submit_import(url: str, settings: Settings, path: Path, resource: str, *,
                  mode: str = "insert", dry_run: bool = False, fmt: str | None = None,
                  batch_size: int | None = None, wait_for_parents: bool = True) -> str:
    """Create an import job for a local file, as the API would; return its id."""
    storage = LocalStorage(settings.upload_dir)
    with path.open("rb") as f:
        stored = storage.save(iter(lambda: f.read(1 << 20), b""), max_bytes=1 << 40)
    values = {"resource": resource, "format": fmt, "mode": mode, "dry_run": dry_run,
              "file_key": stored.key, "file_name": path.name, "file_size_bytes": stored.size,
              "source_url": None, "idempotency_key": None, "request_id": None,
              "wait_for_parents": wait_for_parents, "fingerprint": fingerprint(sha=stored.sha256)}
    with db.connect(url, autocommit=True) as c:
        job, _ = service.create(c, JobKind.IMPORT, values)
    return job.id


def run_jobs(url: str, settings: Settings) -> None:
    """Run queued jobs to completion in this process (no server needed)."""
    worker = Worker(settings, url, name="test-worker")
    while worker.run_once():
        pass


def get_job(url: str, job_id: str, kind: JobKind = JobKind.IMPORT) -> dict[str, Any]:
    with db.connect(url, autocommit=True) as c:
        return service.get(c, kind, job_id).row()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``bulkport serve`` as a real process, driven over HTTP."""

    def __init__(self, url: str, data_dir: Path, workers: int = 2,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "BULKPORT_DATABASE_URL": url,
                    "BULKPORT_LEASE_SECONDS": "5", "BULKPORT_POLL_INTERVAL_SECONDS": "0.1",
                    **(env or {})}
        self.args = [sys.executable, "-m", "bulkport", "serve", "--host", "127.0.0.1",
                     "--port", str(self.port), "--data-dir", str(data_dir),
                     "--workers", str(workers)]
        self.log = data_dir.parent / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> ServerProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=self.log.open("ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not start: {self.log.read_text()[-3000:]}")

    def stop(self, timeout: float = 30) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=30)

    def wait_job(self, job_id: str, kind: str = "imports", timeout: float = 120
                 ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.client() as c:
            while time.monotonic() < deadline:
                job: dict[str, Any] = c.get(f"/v1/{kind}/{job_id}").json()
                if job["status"] not in ("pending", "processing"):
                    return job
                time.sleep(0.1)
        raise TimeoutError(f"job {job_id} still {job['status']}")


@pytest.fixture
def server(clean_db: str, tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(clean_db, tmp_path / "data").start()
    try:
        yield srv
    finally:
        srv.stop()
