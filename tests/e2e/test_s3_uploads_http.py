"""Uploads over HTTP into the S3 bucket (a real server process, moto's real S3 server).

A large upload streams through the API as a multipart upload with the API's
memory flat; one over the limit is a 413 with the multipart upload aborted; an
unreachable bucket is a 503 in the error shape; a preview leaves nothing behind;
an import runs end to end with nothing stored on the instance's disk.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import ServerProcess, bucket_keys, pending_uploads, s3_env

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
PART = 5 * MIB
LIMIT = 48 * MIB
BOUNDARY = "bulkport-test-boundary"


def _users_lines(total: int) -> Iterator[bytes]:
    """A users CSV of about ``total`` bytes, generated as it is sent."""
    yield b"email,name,role\n"
    sent, i, block = 0, 0, []
    while sent < total:
        line = f"user{i}@example.com,User number {i},reader\n".encode()
        block.append(line)
        sent += len(line)
        i += 1
        if len(block) == 2000:
            yield b"".join(block)
            block = []
    if block:
        yield b"".join(block)


def _multipart(file_chunks: Iterator[bytes], fields: dict[str, str]) -> Iterator[bytes]:
    """A multipart/form-data body streamed from ``file_chunks`` (sent chunked)."""
    for name, value in fields.items():
        yield (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
               f"{value}\r\n").encode()
    yield (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
           "filename=\"users.csv\"\r\nContent-Type: text/csv\r\n\r\n").encode()
    yield from file_chunks
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def _post_streamed(srv: ServerProcess, total: int) -> httpx.Response:
    with httpx.Client(base_url=srv.base, timeout=120) as client:
        return client.post("/v1/imports", content=_multipart(_users_lines(total),
                                                             {"resource": "users"}),
                           headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})


class _PeakRss:
    """The highest resident memory of a process, sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = self.proc.memory_info().rss
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


@pytest.fixture
def api(clean_db: str, s3_endpoint: str, bucket: str, tmp_path: Path
        ) -> Iterator[ServerProcess]:
    """The API alone (no workers), storing uploads in ``bucket`` in parts of 5 MiB."""
    srv = ServerProcess(clean_db, tmp_path / "data", workers=0, env=s3_env(
        s3_endpoint, bucket, BULKPORT_S3_PART_BYTES=str(PART),
        BULKPORT_MAX_UPLOAD_BYTES=str(LIMIT))).start()
    try:
        yield srv
    finally:
        srv.stop()


def test_a_large_upload_streams_to_the_bucket_with_flat_memory(
        api: ServerProcess, s3: Any, bucket: str, tmp_path: Path) -> None:
    assert api.proc is not None
    # A first multipart upload warms the path: botocore's models, the thread pool, the
    # allocator's arenas. What the second one adds is what an upload holds.
    warm = _post_streamed(api, 12 * MIB)
    assert warm.status_code == 202, warm.text
    base = psutil.Process(api.proc.pid).memory_info().rss
    with _PeakRss(api.proc.pid) as rss:
        resp = _post_streamed(api, 45 * MIB)
    assert resp.status_code == 202, resp.text
    job = resp.json()
    key = f"uploads/{_file_key(api, job['job_id'])}"
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == job["file_size_bytes"] > 45 * MIB
    assert head["ETag"].strip('"').endswith("-10")  # ten parts of at most 5 MiB
    # About three parts are held (the one filling, the one sent, botocore's copy): measured
    # +13 to +22 MiB. The whole file held in memory is at least 45 MiB (+108 MiB measured
    # with one part as large as the file).
    assert rss.peak - base < 7 * PART, (base, rss.peak)
    assert list((tmp_path / "data" / "uploads").glob("*")) == []  # nothing on disk
    assert pending_uploads(s3, bucket) == []
    assert len(bucket_keys(s3, bucket)) == 2


def _file_key(srv: ServerProcess, job_id: str) -> str:
    import psycopg

    with psycopg.connect(srv.env["BULKPORT_DATABASE_URL"]) as c:
        row = c.execute("SELECT file_key FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return str(row[0])


def test_over_the_limit_is_a_413_and_leaves_nothing_in_the_bucket(
        api: ServerProcess, s3: Any, bucket: str) -> None:
    resp = _post_streamed(api, 60 * MIB)  # chunked: the limit is met while it streams
    assert resp.status_code == 413, resp.text
    assert resp.json()["error"] == "payload_too_large"
    deadline = time.monotonic() + 10  # the abort runs as the request ends
    while pending_uploads(s3, bucket) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (bucket_keys(s3, bucket), pending_uploads(s3, bucket)) == ([], [])


def test_a_client_gone_mid_upload_leaves_nothing_in_the_bucket(
        api: ServerProcess, s3: Any, bucket: str) -> None:
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
            "filename=\"users.csv\"\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", api.port)) as sock:
        sock.sendall(b"POST /v1/imports HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: multipart/form-data; boundary=" + BOUNDARY.encode()
                     + b"\r\nContent-Length: " + str(40 * MIB).encode() + b"\r\n\r\n" + head)
        for chunk in _users_lines(2 * PART + MIB):  # two parts sent, then the client goes
            sock.sendall(chunk)
        deadline = time.monotonic() + 20
        while not pending_uploads(s3, bucket) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pending_uploads(s3, bucket), "the multipart upload never started"
    deadline = time.monotonic() + 20  # the abort runs as the request ends
    while pending_uploads(s3, bucket) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (bucket_keys(s3, bucket), pending_uploads(s3, bucket)) == ([], [])


def test_a_preview_leaves_nothing_in_the_bucket(api: ServerProcess, s3: Any,
                                                bucket: str) -> None:
    with api.client() as client:
        resp = client.post("/v1/imports/preview", data={"resource": "users"},
                           files={"file": ("u.csv", b"email,name,role\na@x.io,A,boss\n")})
    assert resp.status_code == 200, resp.text
    assert resp.json()["format"] == "csv"
    assert bucket_keys(s3, bucket) == []


def test_an_unreachable_bucket_is_a_503(clean_db: str, s3_endpoint: str,
                                        tmp_path: Path) -> None:
    env = s3_env(s3_endpoint, "no-such-bucket")
    with ServerProcess(clean_db, tmp_path / "data", workers=0, env=env) as srv, \
            srv.client() as client:
        resp = client.post("/v1/imports", data={"resource": "users"},
                           files={"file": ("u.csv", b"email,name,role\na@x.io,A,admin\n")})
    assert resp.status_code == 503, resp.text
    body = resp.json()
    assert body["error"] == "storage_unavailable" and "no-such-bucket" in body["message"]
    assert set(body) == {"error", "message", "details", "request_id"}


def test_an_import_end_to_end_keeps_nothing_on_the_instance(
        clean_db: str, s3_endpoint: str, bucket: str, s3: Any, tmp_path: Path) -> None:
    env = s3_env(s3_endpoint, bucket, BULKPORT_UPLOAD_RETENTION_SECONDS="0")
    csv = b"email,name,role\na@x.io,A,admin\nb@x.io,B,boss\nc@x.io,C,reader\n"
    with ServerProcess(clean_db, tmp_path / "data", workers=1, env=env) as srv, \
            srv.client() as client:
        resp = client.post("/v1/imports", data={"resource": "users"},
                           files={"file": ("u.csv", csv)})
        assert resp.status_code == 202, resp.text
        job = srv.wait_job(resp.json()["job_id"])
        assert (job["status"], job["successful_records"], job["error_records"]) == (
            "completed_with_errors", 2, 1), job
        errors = client.get(f"/v1/imports/{job['job_id']}/errors", params={"format": "csv"})
        assert errors.status_code == 200 and b"b@x.io" in errors.content
        deadline = time.monotonic() + 30  # retention 0: the sweep after the job deletes it
        while bucket_keys(s3, bucket) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert bucket_keys(s3, bucket) == []
    assert list((tmp_path / "data" / "uploads").glob("*")) == []
