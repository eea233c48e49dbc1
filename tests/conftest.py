"""Shared fixtures: a real PostgreSQL (embedded pgserver) and a real server process.

Set ``BULKPORT_TEST_DATABASE_URL`` to run against another PostgreSQL instead.
"""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from bulkport import db
from bulkport.config import Settings
from bulkport.jobs import service
from bulkport.jobs.status import JobKind
from bulkport.jobs.store import fingerprint
from bulkport.jobs.worker import Worker
from bulkport.storage import upload_storage

REPO = Path(__file__).resolve().parent.parent
TESTDATA = REPO / "tests" / "data"
# The public evaluation file (10,000 users with known flaws); see tests/data/README.md.
USERS_HUGE = TESTDATA / "users_huge.csv"
if not USERS_HUGE.is_file():  # fail loudly: a missing data file must never become a skip
    raise RuntimeError(f"test data missing: {USERS_HUGE}")
TABLES = ("import_errors", "jobs", "comments", "articles", "users",
          "rate_limit_buckets")


def empty_tables(conn: psycopg.Connection[Any], tables: tuple[str, ...] = TABLES) -> None:
    """TRUNCATE ``tables`` (autocommit ``conn``), retried when it deadlocks.

    A server or worker left running by a module-scoped fixture keeps polling the
    queue: its claim reads the chunk table and the job table, which TRUNCATE's
    CASCADE locks in another order, and PostgreSQL then aborts one of the two.
    """
    for attempt in range(5):
        try:
            conn.execute("TRUNCATE " + ", ".join(tables) + " CASCADE")
            return
        except psycopg.errors.DeadlockDetected:
            if attempt == 4:
                raise
            time.sleep(0.1 * (attempt + 1))


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
        empty_tables(c)
    return pg_url


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", lease_seconds=5, poll_interval_seconds=0.1)


def submit_import(url: str, settings: Settings, path: Path, resource: str, *,
                  mode: str = "insert", dry_run: bool = False, fmt: str | None = None,
                  batch_size: int | None = None, wait_for_parents: bool = True) -> str:
    """Create an import job for a local file, as the API would; return its id."""
    storage = upload_storage(settings)
    with path.open("rb") as f:
        stored = storage.save(iter(lambda: f.read(1 << 20), b""), max_bytes=1 << 40)
    values = {"resource": resource, "format": fmt, "mode": mode, "dry_run": dry_run,
              "file_key": stored.key, "file_name": path.name, "file_size_bytes": stored.size,
              "source_url": None, "idempotency_key": None, "request_id": None,
              "wait_for_parents": wait_for_parents, "fingerprint": fingerprint(sha=stored.sha256)}
    with db.connect(url, autocommit=True) as c:
        job, _ = service.create(c, JobKind.IMPORT, values)
    return job.id


@contextmanager
def worker_threads(settings: Settings, url: str, count: int, prefix: str = "w"
                   ) -> Iterator[threading.Event]:
    """``count`` workers of the real worker loop, each in a thread, for the block.

    Yields their stop event; leaving the block sets it and waits for every
    worker to hand back or finish what it holds.
    """
    stop = threading.Event()
    workers = [Worker(settings, url, name=f"{prefix}{i}", stopping=stop) for i in range(count)]
    threads = [threading.Thread(target=w.run_forever) for w in workers]
    for t in threads:
        t.start()
    try:
        yield stop
    finally:
        stop.set()
        for t in threads:
            t.join()


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


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 30) -> None:
    """SIGTERM ``proc`` and wait; SIGKILL its process group if it outlives ``timeout``."""
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


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
        stop_process(self.proc, timeout)

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


@contextmanager
def own_database(pg_url: str, name: str) -> Iterator[str]:
    """A database of its own: the module's server (workers included) never sees its jobs."""
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {name}")
    url = make_conninfo(pg_url, dbname=name)
    db.migrate(url)
    try:
        yield url
    finally:
        with psycopg.connect(pg_url, autocommit=True) as c:
            c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# --- S3 (moto's server: a real S3 API on loopback) ----------------------------------------

S3_CREDENTIALS = {"aws_access_key_id": "test-key", "aws_secret_access_key": "test-secret",
                  "region_name": "us-east-1"}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 and a free port, for the whole session."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        moto.stop()


def s3_env(endpoint: str, bucket: str, **more: str) -> dict[str, str]:
    """The ``BULKPORT_S3_*`` variables of a process that stores its files in ``bucket``."""
    return {"BULKPORT_S3_BUCKET": bucket, "BULKPORT_S3_ENDPOINT_URL": endpoint,
            "BULKPORT_S3_REGION": S3_CREDENTIALS["region_name"],
            "BULKPORT_S3_ACCESS_KEY_ID": S3_CREDENTIALS["aws_access_key_id"],
            "BULKPORT_S3_SECRET_ACCESS_KEY": S3_CREDENTIALS["aws_secret_access_key"], **more}


def s3_settings(endpoint: str, bucket: str, data_dir: Path, **more: Any) -> Settings:
    """Settings that store uploads and exports in ``bucket``."""
    return Settings(data_dir=data_dir, lease_seconds=5, poll_interval_seconds=0.1,
                    s3_bucket=bucket, s3_endpoint_url=endpoint,
                    s3_region=S3_CREDENTIALS["region_name"],
                    s3_access_key_id=S3_CREDENTIALS["aws_access_key_id"],
                    s3_secret_access_key=S3_CREDENTIALS["aws_secret_access_key"], **more)


@pytest.fixture
def s3(s3_endpoint: str) -> Any:
    """A boto3 client of the test S3 server."""
    import boto3

    return boto3.client("s3", endpoint_url=s3_endpoint, **S3_CREDENTIALS)


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    """A new, empty bucket for one test; emptied and removed after it."""
    name = f"bulkport-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        for upload in s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
            s3.abort_multipart_upload(Bucket=name, Key=upload["Key"],
                                      UploadId=upload["UploadId"])
        for obj in s3.list_objects_v2(Bucket=name).get("Contents", []):
            s3.delete_object(Bucket=name, Key=obj["Key"])
        s3.delete_bucket(Bucket=name)


def bucket_keys(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    """The keys of the objects in ``bucket`` under ``prefix``."""
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def pending_uploads(s3: Any, bucket: str) -> list[str]:
    """The keys of the multipart uploads started in ``bucket`` and neither completed nor
    aborted."""
    return sorted(u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


@pytest.fixture
def server(clean_db: str, tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(clean_db, tmp_path / "data").start()
    try:
        yield srv
    finally:
        srv.stop()


class FileServer:
    """A loopback HTTP server with canned routes; remembers every request it received."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[http.server.BaseHTTPRequestHandler], None]] = {}
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                route = outer.routes.get(self.path.split("?")[0])
                if route is None:
                    self.send_error(404)
                else:
                    route(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)

    def body(self, path: str, data: bytes, content_type: str = "text/csv") -> None:
        def send(h: http.server.BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Type", content_type)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        self.routes[path] = send

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        def send(h: http.server.BaseHTTPRequestHandler) -> None:
            h.send_response(status)
            h.send_header("Location", location)
            h.send_header("Content-Length", "0")
            h.end_headers()
        self.routes[path] = send


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    server = FileServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
