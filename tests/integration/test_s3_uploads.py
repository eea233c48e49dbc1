"""Upload storage in an S3 bucket (moto's real S3 server on loopback).

The backend itself: multipart streaming, the abort on any failure, ranged reads,
the factory; then what runs on it in this process: a ``file_url`` download into
the bucket, an import end to end, the retention sweep deleting the object.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bulkport import db
from bulkport.config import Settings
from bulkport.errors import FetchFailed, PayloadTooLarge
from bulkport.jobs.status import JobKind
from bulkport.jobs.sweep import sweep
from bulkport.pipeline.fetch import fetch
from bulkport.storage import LocalStorage, StorageError, upload_storage
from bulkport.storage_s3 import S3Storage
from tests.conftest import (
    FileServer,
    bucket_keys,
    get_job,
    pending_uploads,
    run_jobs,
    s3_settings,
    submit_import,
)

MIB = 1024 * 1024
PART = 5 * MIB  # the smallest part S3 accepts


@pytest.fixture
def storage(s3_endpoint: str, bucket: str, tmp_path: Path) -> S3Storage:
    made = upload_storage(s3_settings(s3_endpoint, bucket, tmp_path / "data",
                                      s3_part_bytes=PART))
    assert isinstance(made, S3Storage)
    return made


def _pieces(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def _data(n: int) -> bytes:
    return bytes((i * 7 + i // 251) % 256 for i in range(n))


def test_the_factory_picks_the_bucket_only_when_one_is_set(
        s3_endpoint: str, bucket: str, tmp_path: Path) -> None:
    assert isinstance(upload_storage(Settings(data_dir=tmp_path)), LocalStorage)
    s3 = upload_storage(s3_settings(s3_endpoint, bucket, tmp_path))
    assert isinstance(s3, S3Storage)
    assert (s3.bucket, s3.prefix, s3.part_bytes) == (bucket, "uploads/", 8 * MIB)


def test_a_file_larger_than_a_part_is_a_multipart_upload(storage: S3Storage, s3: Any,
                                                          bucket: str) -> None:
    data = _data(2 * PART + 12345)
    stored = storage.save(_pieces(data), max_bytes=len(data))
    assert (stored.size, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    head = s3.head_object(Bucket=bucket, Key=f"uploads/{stored.key}")
    # A multipart object's ETag ends in "-<parts>": three parts of at most one part size
    # were sent, never the whole file in one request.
    assert head["ETag"].strip('"').endswith("-3")
    assert head["ContentLength"] == len(data)
    with storage.open_read(stored.key) as f:
        assert f.read() == data
    assert pending_uploads(s3, bucket) == []


def test_a_small_file_is_one_put(storage: S3Storage, s3: Any, bucket: str) -> None:
    stored = storage.save(iter([b"email,name\n", b"a@x.io,A\n"]), max_bytes=100)
    head = s3.head_object(Bucket=bucket, Key=f"uploads/{stored.key}")
    assert "-" not in head["ETag"] and head["ContentLength"] == stored.size == 20
    assert pending_uploads(s3, bucket) == []


def test_over_the_limit_aborts_the_multipart_upload(storage: S3Storage, s3: Any,
                                                     bucket: str) -> None:
    data = _data(2 * PART + 10)
    with pytest.raises(PayloadTooLarge):
        storage.save(_pieces(data), max_bytes=2 * PART)  # passed after one part went
    assert bucket_keys(s3, bucket) == []
    assert pending_uploads(s3, bucket) == []


def test_a_failing_source_aborts_the_multipart_upload(storage: S3Storage, s3: Any,
                                                       bucket: str) -> None:
    def broken() -> Iterator[bytes]:
        yield from _pieces(_data(PART + 1))
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        storage.save(broken(), max_bytes=1 << 30)
    assert (bucket_keys(s3, bucket), pending_uploads(s3, bucket)) == ([], [])


async def _async_pieces(data: bytes) -> Any:
    for piece in _pieces(data):
        yield piece


def test_save_async_streams_parts_from_a_thread(storage: S3Storage, s3: Any,
                                                bucket: str) -> None:
    data = _data(PART + 3)
    stored = asyncio.run(storage.save_async(_async_pieces(data), max_bytes=len(data)))
    assert s3.head_object(Bucket=bucket, Key=f"uploads/{stored.key}")["ETag"].endswith('-2"')
    with pytest.raises(PayloadTooLarge):
        asyncio.run(storage.save_async(_async_pieces(data), max_bytes=PART))
    assert bucket_keys(s3, bucket) == [f"uploads/{stored.key}"]
    assert pending_uploads(s3, bucket) == []


def test_ranged_reads_count_from_the_start_of_the_object(storage: S3Storage) -> None:
    data = _data(300_000)
    key = storage.save(_pieces(data), max_bytes=len(data)).key
    with storage.open_read(key, 1000, 2500) as f:
        assert f.tell() == 1000
        assert f.read(500) == data[1000:1500] and f.tell() == 1500
        assert f.read() == data[1500:2500] and f.tell() == 2500
        assert f.read() == b""
    with storage.open_read(key, 299_990) as f:
        assert f.read() == data[299_990:]
    with storage.open_read(key) as f:  # sniffing rewinds: a new ranged GET
        assert f.read(200_000) == data[:200_000]
        f.seek(0)
        assert f.read(10) == data[:10]
        f.seek(250_000)
        assert f.read() == data[250_000:]
    with storage.open_read(key, len(data)) as f:  # at the end: nothing, no error
        assert f.read() == b""
    with storage.open_read(key, 10, 20) as f, pytest.raises(io.UnsupportedOperation):
        f.seek(0)


class _CuttingProxy:
    """A TCP proxy to the S3 server that, once armed, cuts the connection carrying the
    ``cut_after``-th byte of responses: a stream broken mid-way, for real."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit("//", 1)[1].split(":")
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.cut_after: int | None = None
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True
                             ).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True
                             ).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, response: bool) -> None:
        try:
            while data := src.recv(65536):
                if response and self.cut_after is not None:
                    self.cut_after -= len(data)
                    if self.cut_after <= 0:
                        self.cut_after = None
                        self.cuts += 1
                        break
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def test_a_read_broken_mid_way_resumes_at_the_byte_it_stopped(
        storage: S3Storage, s3_endpoint: str, bucket: str, tmp_path: Path) -> None:
    data = _data(3 * MIB)
    key = storage.save(_pieces(data), max_bytes=len(data)).key
    proxy = _CuttingProxy(s3_endpoint)
    through = upload_storage(s3_settings(proxy.endpoint, bucket, tmp_path))
    with through.open_read(key, 100) as f:
        proxy.cut_after = MIB + 12345  # inside the first GET's body
        assert f.read() == data[100:]
    assert proxy.cuts == 1
    proxy.listener.close()


def test_an_empty_object_reads_as_empty(storage: S3Storage) -> None:
    key = storage.save(iter([]), max_bytes=10).key
    with storage.open_read(key) as f:
        assert f.read() == b""


def test_a_missing_object_or_bucket_is_a_storage_error(
        storage: S3Storage, s3_endpoint: str, tmp_path: Path) -> None:
    with pytest.raises(StorageError) as missing, storage.open_read("no-such-key") as f:
        f.read()
    assert missing.value.status_code == 503 and "no-such-key" in missing.value.message
    gone = upload_storage(s3_settings(s3_endpoint, "no-such-bucket", tmp_path))
    with pytest.raises(StorageError) as refused:
        gone.save(iter([b"x"]), max_bytes=10)
    assert "no-such-bucket" in refused.value.message


def test_delete_removes_the_object(storage: S3Storage, s3: Any, bucket: str) -> None:
    key = storage.save(iter([b"abc"]), max_bytes=10).key
    storage.delete(key)
    storage.delete(key)  # already gone: no error
    assert bucket_keys(s3, bucket) == []


# --- what runs on it ------------------------------------------------------------------------


def test_a_file_url_download_streams_into_the_bucket(
        file_server: FileServer, s3_endpoint: str, bucket: str, s3: Any, tmp_path: Path) -> None:
    settings = s3_settings(s3_endpoint, bucket, tmp_path / "data", s3_part_bytes=PART,
                           allow_private_urls=True)
    body = _data(PART + 777)
    file_server.body("/users.csv", body)
    stored = fetch(file_server.base + "/users.csv", upload_storage(settings), settings)
    head = s3.head_object(Bucket=bucket, Key=f"uploads/{stored.key}")
    assert head["ETag"].endswith('-2"') and stored.size == len(body)
    assert not (tmp_path / "data" / "uploads").exists()  # nothing on local disk


def _users_csv(n: int) -> bytes:
    rows = [f"u{i}@example.com,User {i},{'reader' if i % 10 else 'boss'}" for i in range(n)]
    return ("email,name,role\n" + "\n".join(rows) + "\n").encode()


def test_an_import_from_the_bucket_end_to_end_then_retention_deletes_it(
        clean_db: str, s3_endpoint: str, bucket: str, s3: Any, tmp_path: Path) -> None:
    settings = s3_settings(s3_endpoint, bucket, tmp_path / "data", batch_size=300,
                           upload_retention_seconds=3600)
    source = tmp_path / "users.csv.gz"
    source.write_bytes(gzip.compress(_users_csv(2000)))
    job_id = submit_import(clean_db, settings, source, "users")
    key = get_job(clean_db, job_id)["file_key"]
    assert bucket_keys(s3, bucket) == [f"uploads/{key}"]
    run_jobs(clean_db, settings)
    job = get_job(clean_db, job_id)
    assert (job["status"], job["processed_records"], job["successful_records"],
            job["error_records"]) == ("completed_with_errors", 2000, 1800, 200), job
    with psycopg.connect(clean_db) as c:
        assert c.execute("SELECT count(*) FROM users").fetchone() == (1800,)
    assert bucket_keys(s3, bucket) == [f"uploads/{key}"]  # kept for the retention period
    with db.connect(clean_db, autocommit=True) as c:
        assert sweep(c, JobKind.IMPORT, upload_storage(settings),
                     retention_seconds=0) == 1
    assert bucket_keys(s3, bucket) == []
    with psycopg.connect(clean_db) as c:
        deleted = c.execute("SELECT file_deleted_at FROM jobs WHERE id = %s", (job_id,)
                            ).fetchone()
    assert deleted is not None and deleted[0] is not None  # recorded in the job's row
    assert not (tmp_path / "data" / "uploads").exists()


def test_an_import_whose_object_is_gone_fails_with_the_reason(
        clean_db: str, s3_endpoint: str, bucket: str, s3: Any, tmp_path: Path) -> None:
    settings = s3_settings(s3_endpoint, bucket, tmp_path / "data")
    source = tmp_path / "users.csv"
    source.write_bytes(_users_csv(5))
    job_id = submit_import(clean_db, settings, source, "users")
    s3.delete_object(Bucket=bucket, Key=f"uploads/{get_job(clean_db, job_id)['file_key']}")
    run_jobs(clean_db, settings)
    job = get_job(clean_db, job_id)
    assert job["status"] == "failed", job
    assert job["failure_reason"].startswith("reading s3://"), job


def test_a_download_the_bucket_refuses_fails_with_the_reason(
        file_server: FileServer, s3_endpoint: str, tmp_path: Path) -> None:
    settings = s3_settings(s3_endpoint, "no-such-bucket", tmp_path / "data",
                           allow_private_urls=True)
    url = file_server.base + "/users.csv"
    file_server.body("/users.csv", b"email,name,role\na@x.io,A,admin\n")
    with pytest.raises(FetchFailed) as failed:
        fetch(url, upload_storage(settings), settings)
    assert failed.value.message.startswith(f"storing the download of {url} failed")
    assert "no-such-bucket" in failed.value.message
