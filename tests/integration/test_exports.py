"""The export pipeline against a real PostgreSQL, without a web server."""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import orjson
import psycopg
import pytest
from psycopg_pool import ConnectionPool

from bulkport import db
from bulkport.config import Settings
from bulkport.jobs.status import JobKind, JobStatus
from bulkport.jobs.store import STORE, fingerprint
from bulkport.pipeline.export.bridge import CopyStream
from bulkport.pipeline.export_spec import parse_spec
from bulkport.sql.exporting import SESSION_OPTIONS
from bulkport.storage import ExportStorage
from tests import export_data
from tests.conftest import get_job, run_jobs, submit_import
from tests.export_data import export_bytes

RESOURCES = ("users", "articles", "comments")


@pytest.fixture
def seeded(clean_db: str) -> str:
    with db.connect(clean_db, autocommit=True) as c:
        export_data.seed(c)
    return clean_db


def rendered(ts: datetime) -> str:
    text = ts.isoformat().removesuffix("+00:00")
    if "." in text:
        text = text.rstrip("0")
    return text + "Z"


def ndjson(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in data.splitlines()]


def csv_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode(), newline="")))


# --- rendering ---------------------------------------------------------------------------


def test_ndjson_renders_every_type(seeded: str) -> None:
    rows = ndjson(export_bytes(seeded, "articles", "ndjson"))
    assert [r["id"] for r in rows] == sorted(a[0] for a in export_data.articles())
    by_id = {a[0]: a for a in export_data.articles()}
    for r in rows:
        a = by_id[r["id"]]
        assert list(r) == ["id", "slug", "title", "description", "body", "author_id", "tags",
                           "published_at", "status", "created_at", "updated_at"]
        assert (r["title"], r["description"], r["body"], r["tags"]) == (a[2], a[3], a[4], a[6])
        assert r["published_at"] is None if a[7] is None else r["published_at"].endswith("Z")
        assert datetime.fromisoformat(r["created_at"]) == a[9]
        # PostgreSQL's rendering: trailing zeros of the fraction trimmed, "Z" for UTC.
        assert r["created_at"] == rendered(a[9])
    # Whole seconds have no fraction; fractions keep their digits.
    stamps = {r["created_at"] for r in rows}
    assert "2024-01-11T00:06:10Z" in stamps
    assert any("." in s for s in stamps)


def test_timestamps_are_utc_z_and_exact(seeded: str) -> None:
    rows = ndjson(export_bytes(seeded, "users", "ndjson", "id,created_at"))
    expected = {u[0]: u[5] for u in export_data.users()}
    for r in rows:
        assert r["created_at"].endswith("Z") and "T" in r["created_at"]
        assert datetime.fromisoformat(r["created_at"]) == expected[r["id"]]


def test_csv_neutralises_formulas_and_quotes_per_rfc4180(seeded: str) -> None:
    data = export_bytes(seeded, "users", "csv")
    rows = csv_rows(data)
    assert data.startswith(b"id,email,name,role,active,created_at,updated_at\n")
    names = {r["name"] for r in rows}
    assert "'=SUM(A1:A9)" in names and "'-minus" in names and "'+plus" in names
    assert "'@at" in names and "''=already quoted" in names and "'''+two apostrophes" in names
    assert "'plain apostrophe" in names  # not formula-like: unchanged
    assert 'say "hi", then go' in names and "crlf\r\nbreak" in names and "Zoë 😀 日本語" in names
    emails = {r["email"] for r in rows}
    assert "'=u0+tag@example.com" in emails and "'-u6@example.org" in emails
    # No cell a spreadsheet would evaluate.
    for r in rows:
        for col in ("email", "name"):
            assert r[col][:1] not in ("=", "+", "-", "@")
    assert {r["active"] for r in rows} == {"true", "false"}
    # Timestamps are bare (never quoted); quoted cells only where needed.
    assert b',"2024' not in data and b',2024-01-01T00:00:00.123456Z,' in data
    assert b',2024-01-02T00:00:37Z,' in data
    assert b'"say ""hi"", then go"' in data


def test_csv_tags_are_json_arrays_and_nulls_empty(seeded: str) -> None:
    rows = csv_rows(export_bytes(seeded, "articles", "csv", "id,description,tags,published_at"))
    tags = {r["id"]: orjson.loads(r["tags"]) for r in rows}
    assert tags == {a[0]: a[6] for a in export_data.articles()}
    assert any(r["description"] == "" for r in rows)
    assert any(r["published_at"] == "" for r in rows)


def test_json_is_one_valid_array(seeded: str) -> None:
    data = export_bytes(seeded, "comments", "json")
    parsed = orjson.loads(data)
    assert isinstance(parsed, list) and len(parsed) == export_data.COMMENTS
    assert parsed == ndjson(export_bytes(seeded, "comments", "ndjson"))


def test_empty_results_are_valid_in_every_format(seeded: str) -> None:
    none = {"role": "admin", "created_at_from": "2100-01-01"}
    assert export_bytes(seeded, "users", "ndjson", filters=none) == b""
    assert orjson.loads(export_bytes(seeded, "users", "json", filters=none)) == []
    assert export_bytes(seeded, "users", "csv", "id,role", none) == b"id,role\n"


def test_big_exports_keep_chunks_whole(clean_db: str) -> None:
    # Enough rows for many 256 KiB chunks: JSON framing must hold across chunk ends.
    with db.connect(clean_db, autocommit=True) as c:
        c.execute("INSERT INTO users (id, email, name, role) SELECT 'u' || i, 'u' || i || "
                  "'@x.io', repeat('n', 200), 'reader' FROM generate_series(1, 6000) i")
    parsed = orjson.loads(export_bytes(clean_db, "users", "json", "id,name"))
    assert len(parsed) == 6000 and len({p["id"] for p in parsed}) == 6000
    assert len(ndjson(export_bytes(clean_db, "users", "ndjson", "id"))) == 6000


# --- projection and filters --------------------------------------------------------------


def test_projection_keeps_the_requested_order(seeded: str) -> None:
    rows = ndjson(export_bytes(seeded, "users", "ndjson", "role,id"))
    assert all(list(r) == ["role", "id"] for r in rows)
    assert export_bytes(seeded, "users", "csv", ["name", "id"]).startswith(b"name,id\n")


@pytest.mark.parametrize(("resource", "filters", "expected"), [
    ("users", {"role": "admin"}, lambda u: u[3] == "admin"),
    ("users", {"role": ["admin", "reader"]}, lambda u: u[3] in ("admin", "reader")),
    ("users", {"active": "false"}, lambda u: not u[4]),
    ("users", {"created_at_from": "2024-01-10", "created_at_to": "2024-01-20T00:00:00Z"},
     lambda u: "2024-01-10" <= u[5].isoformat() <= "2024-01-20T00:00:00+00:00"),
    ("users", {"updated_since": "2024-04-30T12:00:00+02:00"},
     lambda u: u[6].isoformat() >= "2024-04-30T10:00:00+00:00"),
    ("articles", {"status": "published"}, lambda a: a[8] == "published"),
    ("articles", {"author_id": "usr_0001"}, lambda a: a[5] == "usr_0001"),
    ("articles", {"tag": "a,b"}, lambda a: "a,b" in a[6]),
    ("articles", {"tag": ["a,b", "=f"]}, lambda a: {"a,b", "=f"} <= set(a[6])),
    ("articles", {"status": "draft", "tag": "python"}, lambda a: a[8] == "draft"
     and "python" in a[6]),
    ("comments", {"article_id": "cm_0003"}, lambda c: c[2] == "cm_0003"),
    ("comments", {"user_id": "u-0014.x:y"}, lambda c: c[3] == "u-0014.x:y"),
])
def test_filters(seeded: str, resource: str, filters: dict[str, Any], expected: Any) -> None:
    source = {"users": export_data.users, "articles": export_data.articles,
              "comments": export_data.comments}[resource]()
    want = sorted(r[0] for r in source if expected(r))
    assert want, "the filter case selects nothing: it proves nothing"
    got = [r["id"] for r in ndjson(export_bytes(seeded, resource, "ndjson", "id", filters))]
    assert got == want


def test_filter_values_cannot_inject_sql(seeded: str) -> None:
    got = export_bytes(seeded, "articles", "ndjson", "id",
                       {"tag": "x'); DROP TABLE users; --"})
    assert got == b""
    with db.connect(seeded) as c:
        assert c.execute("SELECT count(*) FROM users").fetchone() == (export_data.USERS,)


# --- streaming: disconnects ----------------------------------------------------------------


def _copy_backends(url: str) -> list[tuple[int, str]]:
    with db.connect(url, autocommit=True) as c:
        return c.execute(
            "SELECT pid, state FROM pg_stat_activity WHERE application_name = 'export-test' "
            "ORDER BY pid").fetchall()


def _pool(url: str) -> ConnectionPool[Any]:
    pool: ConnectionPool[Any] = ConnectionPool(
        url, min_size=1, max_size=1, open=False,
        kwargs={"options": SESSION_OPTIONS, "autocommit": True,
                "application_name": "export-test"})
    pool.open(wait=True)
    return pool


def _big(url: str) -> None:
    with db.connect(url, autocommit=True) as c:
        c.execute("INSERT INTO users (id, email, name, role) VALUES ('a', 'a@x.io', 'A', 'admin')")
        # ~40 MB of NDJSON: far more than the socket buffers between us and the server.
        c.execute("INSERT INTO articles (id, slug, title, body, author_id, status) "
                  "SELECT 'a' || i, 'a-' || i, 't', repeat('word ', 2000), 'a', 'draft' "
                  "FROM generate_series(1, 4000) i")


def test_stream_reads_everything_then_frees_the_connection(seeded: str) -> None:
    async def main() -> bytes:
        pool = _pool(seeded)
        try:
            stream = CopyStream(pool.connection(), parse_spec("users", "json", None, {}),
                                gzip=True)
            await stream.start()
            body = b"".join([c async for c in stream.chunks()])
            await stream.aclose()
            assert stream.rows == export_data.USERS
            assert pool.get_stats()["pool_available"] == 1
            return body
        finally:
            pool.close()

    body = gzip.decompress(asyncio.run(main()))
    assert body == export_bytes(seeded, "users", "json")


@pytest.mark.parametrize("how", ["aclose", "cancelled task"])
def test_stopping_a_stream_cancels_the_query_and_returns_the_connection(
        clean_db: str, how: str) -> None:
    _big(clean_db)

    async def main() -> None:
        pool = _pool(clean_db)
        try:
            spec = parse_spec("articles", "ndjson", None, {})
            stream = CopyStream(pool.connection(), spec, chunk_bytes=64 * 1024)
            await stream.start()
            chunks = stream.chunks()
            await chunks.__anext__()
            (pid, state), = _copy_backends(clean_db)
            assert state == "active"
            if how == "aclose":
                await chunks.aclose()
                await stream.aclose()
            else:
                with anyio.move_on_after(0.2) as scope:
                    try:
                        async for _ in chunks:
                            await anyio.sleep(1)  # a client that stopped reading
                    finally:
                        await stream.aclose()  # runs inside the cancelled scope
                assert scope.cancelled_caught
            # Same backend, idle: the query stopped and the connection went back to the pool.
            assert _copy_backends(clean_db) == [(pid, "idle")]
            assert pool.get_stats()["pool_available"] == 1
            # ...and is usable: a second export on the one-connection pool works.
            again = CopyStream(pool.connection(), parse_spec("users", "csv", "id", {}))
            await again.start()
            assert b"".join([c async for c in again.chunks()]) == b"id\na\n"
            await again.aclose()
        finally:
            pool.close()

    asyncio.run(main())


def test_a_failing_query_raises_before_any_byte(seeded: str) -> None:
    async def main() -> None:
        pool = _pool(seeded)
        try:
            with db.connect(seeded, autocommit=True) as c:
                c.execute("ALTER TABLE comments RENAME COLUMN body TO body_gone")
            try:
                stream = CopyStream(pool.connection(), parse_spec("comments", "csv", None, {}))
                with pytest.raises(psycopg.errors.UndefinedColumn):
                    await stream.start()
                assert pool.get_stats()["pool_available"] == 1
            finally:
                with db.connect(seeded, autocommit=True) as c:
                    c.execute("ALTER TABLE comments RENAME COLUMN body_gone TO body")
        finally:
            pool.close()

    asyncio.run(main())


# --- jobs ----------------------------------------------------------------------------------


def submit_export(url: str, resource: str, fmt: str, fields: Any = None,
                  filters: dict[str, Any] | None = None) -> str:
    from psycopg.types.json import Jsonb

    spec = parse_spec(resource, fmt, fields, filters or {})
    values = {"resource": resource, "format": fmt, "fields": Jsonb(list(spec.fields)),
              "filters": Jsonb(spec.filters), "idempotency_key": None, "request_id": None,
              "fingerprint": fingerprint(**spec.identity())}
    with db.connect(url, autocommit=True) as c:
        job, _ = STORE.create(c, JobKind.EXPORT, values)
    return str(job["id"])


def test_export_job_writes_the_same_bytes_as_the_stream(seeded: str,
                                                        settings: Settings) -> None:
    job_id = submit_export(seeded, "articles", "csv", None, {"status": "published"})
    run_jobs(seeded, settings)
    job = get_job(seeded, job_id, JobKind.EXPORT)
    assert job["status"] == "completed"
    path = ExportStorage(settings.export_dir).path(job["file_key"])
    data = path.read_bytes()
    assert data == export_bytes(seeded, "articles", "csv", None, {"status": "published"})
    assert job["record_count"] == export_data.ARTICLES // 3
    assert job["file_size_bytes"] == len(data)
    assert job["expires_at"] > job["completed_at"]
    assert [p.name for p in settings.export_dir.iterdir()] == [path.name]


def test_cancelled_export_job_leaves_no_file(clean_db: str, settings: Settings) -> None:
    _big(clean_db)
    job_id = submit_export(clean_db, "articles", "ndjson")
    from bulkport.jobs.worker import Worker

    worker = Worker(settings, clean_db, name="w")
    cancelled = []

    # Cancel from "another client" once the export is under way.
    import threading

    def cancel_soon() -> None:
        import time

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            parts = list(settings.export_dir.glob("*.part")) if settings.export_dir.exists() \
                else []
            if parts and parts[0].stat().st_size > 0:
                with db.connect(clean_db, autocommit=True) as c:
                    cancelled.append(STORE.cancel(c, JobKind.EXPORT, job_id))
                return
            time.sleep(0.005)

    t = threading.Thread(target=cancel_soon)
    t.start()
    assert worker.run_once()
    t.join()
    assert cancelled and cancelled[0] is not None, "the export ended before it was cancelled"
    job = get_job(clean_db, job_id, JobKind.EXPORT)
    assert job["status"] == "cancelled" and job["file_key"] is None
    assert list(settings.export_dir.iterdir()) == []


def test_failed_upload_leaves_no_file_and_a_reason(seeded: str, settings: Settings,
                                                   tmp_path: Path) -> None:
    from bulkport.storage import StorageError

    class Refusing(ExportStorage):
        def publish(self, tmp: Path, key: str) -> None:
            raise StorageError("upload to s3://nowhere failed: AccessDenied")

    from bulkport.jobs.runtime import Resources, run_claimed
    from bulkport.records import job_from_row
    from bulkport.storage import LocalStorage

    job_id = submit_export(seeded, "users", "ndjson")
    with db.connect(seeded, autocommit=True) as c:
        job = STORE.claim(c, JobKind.EXPORT, "w", 30)
    assert job is not None and job["id"] == job_id
    storage = Refusing(settings.export_dir)
    status = run_claimed(job_from_row(job), "w", Resources(
        settings, lambda: db.connect(seeded, autocommit=True),
        LocalStorage(settings.upload_dir), storage))
    assert status is JobStatus.FAILED
    job = get_job(seeded, job_id, JobKind.EXPORT)
    assert job["status"] == "failed" and "AccessDenied" in job["failure_reason"]
    assert list(settings.export_dir.iterdir()) == []


def test_expired_export_files_are_swept(seeded: str, settings: Settings) -> None:
    first = submit_export(seeded, "users", "csv")
    run_jobs(seeded, settings)
    key = get_job(seeded, first, JobKind.EXPORT)["file_key"]
    assert (settings.export_dir / key).exists()
    with db.connect(seeded, autocommit=True) as c:
        c.execute("UPDATE export_jobs SET expires_at = now() - interval '1 second'")
    submit_export(seeded, "users", "ndjson")
    run_jobs(seeded, settings)  # the next export run sweeps
    assert not (settings.export_dir / key).exists()
    assert get_job(seeded, first, JobKind.EXPORT)["file_key"] is None


# --- round trip ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["ndjson", "csv", "json"])
def test_round_trip_through_an_empty_database(seeded: str, settings: Settings, tmp_path: Path,
                                              fmt: str) -> None:
    with db.connect(seeded, autocommit=True) as c:
        before = export_data.snapshot(c)
    first = {r: export_bytes(seeded, r, fmt) for r in RESOURCES}
    with db.connect(seeded, autocommit=True) as c:
        export_data.empty_resources(c)
    for resource in RESOURCES:
        path = tmp_path / f"{resource}.{fmt}"
        path.write_bytes(first[resource])
        job_id = submit_import(seeded, settings, path, resource)
        run_jobs(seeded, settings)
        job = get_job(seeded, job_id)
        assert (job["status"], job["error_records"]) == ("completed", 0), job
    with db.connect(seeded, autocommit=True) as c:
        assert export_data.snapshot(c) == before
    second = {r: export_bytes(seeded, r, fmt) for r in RESOURCES}
    assert second == first
