"""Imports end to end: a real ``bulkport serve`` process driven over HTTP (SPEC §2, §3).

One server per module (a new process per test would cost more than the tests);
each test starts from emptied tables and waits for its own jobs to finish, so
the tests do not depend on their order. Tests that need jobs to stay
``pending`` use a second server without workers on a database of its own.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from bulkport import db
from tests.conftest import USERS_HUGE, ServerProcess, empty_tables

pytestmark = pytest.mark.e2e

HUGE_CODES = {"invalid_email_format": 201, "invalid_role": 167, "duplicate_email": 33}
JOB_FIELDS = {
    "job_id", "resource", "format", "mode", "status", "total_records", "processed_records",
    "successful_records", "error_records", "progress", "rows_per_sec", "eta_seconds", "errors",
    "errors_url", "failed_batches", "failure_reason", "created_at", "started_at", "completed_at",
}
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def srv(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(pg_url, tmp_path_factory.mktemp("imports-http") / "data").start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def _server_on_own_database(pg_url: str, name: str, data_dir: Path, workers: int,
                            env: dict[str, str]) -> Iterator[ServerProcess]:
    """A server process on a database of its own, dropped afterwards."""
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {name}")
    url = make_conninfo(pg_url, dbname=name)
    db.migrate(url)
    server = ServerProcess(url, data_dir, workers=workers, env=env).start()
    try:
        yield server
    finally:
        server.stop()
        with psycopg.connect(pg_url, autocommit=True) as c:
            c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def idle_srv(pg_url: str, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[ServerProcess]:
    """A server without workers on its own database: its jobs stay ``pending``."""
    with _server_on_own_database(pg_url, "bulkport_e2e_idle",
                                 tmp_path_factory.mktemp("imports-idle") / "data", 0,
                                 {"BULKPORT_ALLOW_PRIVATE_URLS": "true"}) as server:
        yield server


@pytest.fixture(scope="module")
def slow_srv(pg_url: str, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[ServerProcess]:
    """A server committing 20 records per batch, so a job stays ``processing`` a while."""
    with _server_on_own_database(pg_url, "bulkport_e2e_slow",
                                 tmp_path_factory.mktemp("imports-slow") / "data", 1,
                                 {"BULKPORT_BATCH_SIZE": "20"}) as server:
        yield server


@pytest.fixture
def http(srv: ServerProcess, pg_url: str) -> Iterator[httpx.Client]:
    """A client of the module's server, on emptied tables."""
    with psycopg.connect(pg_url, autocommit=True) as c:
        empty_tables(c)
    with srv.client() as client:
        yield client


@pytest.fixture
def sql(pg_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_url, autocommit=True) as c:
        yield c


# --- helpers ----------------------------------------------------------------------------


def post_file(client: httpx.Client, content: bytes, name: str, resource: str,
              headers: dict[str, str] | None = None, **fields: str) -> httpx.Response:
    return client.post("/v1/imports", files={"file": (name, content)},
                       data={"resource": resource, **fields}, headers=headers or {})


def run(srv: ServerProcess, client: httpx.Client, content: bytes, name: str, resource: str,
        **fields: str) -> dict[str, Any]:
    """Upload a file, check the 202, and return the finished job."""
    resp = post_file(client, content, name, resource, **fields)
    assert resp.status_code == 202, resp.text
    return srv.wait_job(resp.json()["job_id"])


def error_pages(client: httpx.Client, job_id: str, limit: int = 100) -> list[dict[str, Any]]:
    """Every error entry of a job, following ``next_cursor`` to the end."""
    entries: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": limit}
    for _ in range(10_000):
        resp = client.get(f"/v1/imports/{job_id}/errors", params=params)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        assert len(page["data"]) <= limit
        entries.extend(page["data"])
        if page["next_cursor"] is None:
            return entries
        params["cursor"] = page["next_cursor"]
    raise AssertionError("next_cursor never ended")


def codes(entries: list[dict[str, Any]]) -> Counter[str]:
    return Counter(e["code"] for e in entries)


def ndjson(*records: dict[str, Any]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def assert_csv_download_round_trips(srv: ServerProcess, client: httpx.Client,
                                    job: dict[str, Any]) -> None:
    """The CSV of rejected records, imported again unchanged, is rejected for the same reasons."""
    def reasons(job_id: str) -> Counter[str]:
        by_row: dict[int, list[str]] = {}
        for e in error_pages(client, job_id):
            by_row.setdefault(e["row"], []).append(e["code"])
        return Counter(";".join(sorted(c)) for c in by_row.values())

    download = client.get(f"/v1/imports/{job['job_id']}/errors", params={"format": "csv"})
    again = run(srv, client, download.content, "rejected.csv", job["resource"])
    assert again["format"] == "csv" and again["successful_records"] == 0
    assert reasons(again["job_id"]) == reasons(job["job_id"])


def count(sql: psycopg.Connection[Any], table: str) -> int:
    row = sql.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


USERS = [
    {"id": "usr_1", "email": "ada@example.com", "name": "Ada", "role": "admin"},
    {"id": "usr_2", "email": "bob@example.com", "name": "Bob", "role": "author",
     "active": False},
    {"id": "usr_3", "email": "cy@example.com", "name": "Cy", "role": "reader"},
]


# --- users_huge.csv ---------------------------------------------------------------------


def test_users_huge_insert_then_upsert(srv: ServerProcess, http: httpx.Client,
                                       sql: psycopg.Connection[Any]) -> None:
    content = USERS_HUGE.read_bytes()
    job = run(srv, http, content, "users_huge.csv", "users")
    assert job["status"] == "completed_with_errors"
    assert (job["successful_records"], job["error_records"]) == (9667, 333)
    assert job["processed_records"] == job["total_records"] == 10000
    assert job["error_counts"] == HUGE_CODES
    entries = error_pages(http, job["job_id"])
    assert codes(entries) == HUGE_CODES
    assert len({e["row"] for e in entries}) == 333
    # Small pages give the same entries, in the same order, without repeats.
    assert error_pages(http, job["job_id"], limit=7) == entries
    assert count(sql, "users") == 9667

    # The status document (SPEC §3).
    assert job.keys() >= JOB_FIELDS
    assert job["format"] == "csv" and job["mode"] == "insert" and job["resource"] == "users"
    assert job["progress"] == 1.0
    assert job["rows_per_sec"] is not None and job["rows_per_sec"] > 0
    assert job["eta_seconds"] is None and job["failure_reason"] is None
    assert job["failed_batches"] == 0
    assert job["started_at"] and job["completed_at"] and job["created_at"]
    assert job["errors"] == entries[:100]
    assert http.get(job["errors_url"]).status_code == 200
    assert entries[0]["row"] == 1 and {e["code"] for e in entries[:2]} == {
        "invalid_email_format", "invalid_role"}
    for e in entries:
        assert e.keys() == {"row", "field", "value", "code", "message"}
        assert e["message"]

    again = run(srv, http, content, "users_huge.csv", "users", mode="upsert")
    assert again["status"] == "completed_with_errors"
    assert (again["successful_records"], again["error_records"]) == (9700, 300)
    assert count(sql, "users") == 9667
    assert "duplicate_email" not in codes(error_pages(http, again["job_id"], limit=1000))


def test_error_downloads_ndjson_and_csv(srv: ServerProcess, http: httpx.Client,
                                        sql: psycopg.Connection[Any]) -> None:
    content = USERS_HUGE.read_bytes()
    job = run(srv, http, content, "users_huge.csv", "users")
    originals = list(csv.DictReader(io.StringIO(content.decode())))

    resp = http.get(f"/v1/imports/{job['job_id']}/errors", params={"format": "ndjson"})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    lines = [orjson.loads(line) for line in resp.content.splitlines()]
    assert len(lines) == 333
    all_codes: Counter[str] = Counter()
    for line in lines:
        assert line.keys() == {"row", "record", "errors"}
        assert line["record"] == originals[line["row"] - 1]  # exactly as uploaded
        for e in line["errors"]:
            assert e.keys() == {"field", "value", "code", "message"}
            all_codes[e["code"]] += 1
    assert all_codes == HUGE_CODES

    resp = http.get(f"/v1/imports/{job['job_id']}/errors", params={"format": "csv"})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/csv")
    assert "attachment" in resp.headers["content-disposition"]
    reader = csv.DictReader(io.StringIO(resp.text))
    header = content.decode().splitlines()[0].split(",")
    assert reader.fieldnames == [*header, "_row", "_errors"]
    rows = list(reader)
    assert len(rows) == 333
    by_row = {line["row"]: line for line in lines}
    for r in rows:
        n = int(r["_row"])
        assert {k: r[k] for k in header} == originals[n - 1]
        assert r["_errors"] == ";".join(e["code"] for e in by_row[n]["errors"])

    # The CSV download goes back in as is: it parses, _row/_errors are ignored, and the
    # same records are rejected again for the same reasons (nothing was fixed).
    again = run(srv, http, resp.content, "rejects.csv", "users")
    assert again["status"] == "completed_with_errors"
    assert again["total_records"] == 333
    assert "malformed_record" not in again["error_counts"]
    assert again["error_records"] == 333
    assert count(sql, "users") == 9667


def test_dry_run_of_users_huge_writes_nothing(srv: ServerProcess, http: httpx.Client,
                                              sql: psycopg.Connection[Any]) -> None:
    job = run(srv, http, USERS_HUGE.read_bytes(), "users_huge.csv", "users", dry_run="true")
    assert job["dry_run"] is True
    assert (job["successful_records"], job["error_records"]) == (9667, 333)
    assert codes(error_pages(http, job["job_id"], limit=1000)) == HUGE_CODES
    assert count(sql, "users") == 0


# --- formats ----------------------------------------------------------------------------


def _users(prefix: str, n: int = 3) -> list[dict[str, Any]]:
    return [{"id": f"{prefix}_{i}", "email": f"{prefix}{i}@example.com", "name": f"U {i}",
             "role": "reader"} for i in range(n)]


def _csv(records: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue().encode()


@pytest.mark.parametrize(("name", "fields", "make", "expected"), [
    # from the file name
    ("a.ndjson", {}, lambda r: ndjson(*r), "ndjson"),
    ("a.jsonl", {}, lambda r: ndjson(*r), "ndjson"),
    ("a.json", {}, lambda r: orjson.dumps(r), "json"),
    ("a.csv", {}, _csv, "csv"),
    ("a.csv.gz", {}, lambda r: gzip.compress(_csv(r)), "csv"),
    ("a.ndjson.gz", {}, lambda r: gzip.compress(ndjson(*r)), "ndjson"),
    # from the content (no useful name)
    ("upload", {}, lambda r: ndjson(*r), "ndjson"),
    ("upload.dat", {}, lambda r: orjson.dumps(r, option=orjson.OPT_INDENT_2), "json"),
    ("upload", {}, _csv, "csv"),
    ("upload", {}, lambda r: gzip.compress(orjson.dumps(r)), "json"),
    ("upload.gz", {}, lambda r: gzip.compress(ndjson(*r)), "ndjson"),
    # from the field, whatever the name says
    ("a.txt", {"format": "ndjson"}, lambda r: ndjson(*r), "ndjson"),
    ("a.csv", {"format": "json"}, lambda r: orjson.dumps(r), "json"),
    ("a.json", {"format": "CSV"}, _csv, "csv"),
])
def test_formats_and_detection(srv: ServerProcess, http: httpx.Client,
                               sql: psycopg.Connection[Any], name: str, fields: dict[str, str],
                               make: Any, expected: str) -> None:
    records = _users("fmt")
    job = run(srv, http, make(records), name, "users", **fields)
    assert job["status"] == "completed", job
    assert job["format"] == expected
    assert job["successful_records"] == 3
    ids = {r[0] for r in sql.execute("SELECT id FROM users")}
    assert ids == {"fmt_0", "fmt_1", "fmt_2"}


def test_json_single_object_and_bom(srv: ServerProcess, http: httpx.Client) -> None:
    one = _users("single", 1)[0]
    assert run(srv, http, orjson.dumps(one), "one.json", "users")["successful_records"] == 1
    bom = b"\xef\xbb\xbf" + _csv(_users("bom", 2))
    job = run(srv, http, bom, "bom.csv", "users")
    assert (job["status"], job["successful_records"]) == ("completed", 2)


# --- dry run ----------------------------------------------------------------------------


def test_dry_run_checks_database_conflicts_and_writes_nothing(
        srv: ServerProcess, http: httpx.Client, sql: psycopg.Connection[Any]) -> None:
    assert run(srv, http, ndjson(*USERS), "u.ndjson", "users")["status"] == "completed"
    before = sql.execute("SELECT id, email, name, role, active FROM users ORDER BY id").fetchall()
    batch = ndjson(
        {"email": "ADA@example.com", "name": "Ada again", "role": "admin"},  # in the DB
        {"id": "usr_2", "email": "new@example.com", "name": "Id taken", "role": "admin"},
        {"email": "fresh@example.com", "name": "Fresh", "role": "reader"},
        {"email": "fresh@example.com", "name": "Fresh twice", "role": "reader"},  # in file
        {"email": "nope", "name": "Bad", "role": "admin"},
    )
    job = run(srv, http, batch, "dry.ndjson", "users", dry_run="true")
    assert job["status"] == "completed_with_errors"
    assert (job["successful_records"], job["error_records"]) == (1, 4)
    by_row = {e["row"]: e["code"] for e in error_pages(http, job["job_id"])}
    assert by_row == {1: "duplicate_email", 2: "duplicate_id", 4: "duplicate_email",
                      5: "invalid_email_format"}
    after = sql.execute("SELECT id, email, name, role, active FROM users ORDER BY id").fetchall()
    assert after == before

    # Dry-run upsert: the first record updates Ada (by email), nothing is written either.
    job = run(srv, http, batch, "dry.ndjson", "users", dry_run="true", mode="upsert")
    assert job["dry_run"] is True and job["mode"] == "upsert"
    assert sql.execute("SELECT id, email, name, role, active FROM users ORDER BY id"
                       ).fetchall() == before


# --- articles and comments ----------------------------------------------------------------


def _words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


ARTICLES = [
    {"id": "art_5f74.a:1", "slug": "hello-world", "title": "Hello", "body": "Hi",
     "author_id": "usr_1", "status": "published", "published_at": "2024-01-02T00:00:00Z",
     "tags": ["intro", "news"], "description": "First"},
    {"slug": "no-id-here", "title": "No id", "body": "b", "author_id": "usr_2",
     "status": "draft"},
    {"id": "art_3", "slug": "Not A Slug", "title": "t", "body": "b", "author_id": "usr_1",
     "status": "draft"},
    {"id": "art_4", "slug": "hello-world", "title": "t", "body": "b", "author_id": "usr_1",
     "status": "draft"},
    {"id": "art_5", "slug": "orphan", "title": "t", "body": "b",
     "author_id": "a-missing-12510", "status": "published"},
    {"id": "art_6", "slug": "early-draft", "title": "t", "body": "b", "author_id": "usr_1",
     "status": "draft", "published_at": "2024-01-01T00:00:00Z"},
    {"id": "bad id!", "slug": "bad-id", "title": "t", "body": "b", "author_id": "usr_1",
     "status": "draft"},
    {"id": "art_8", "slug": "missing-bits", "author_id": "usr_1", "status": "secret"},
    {"id": "art_9", "slug": "second", "title": "Two", "body": "b", "author_id": "usr_3",
     "status": "archived", "tags": []},
]
COMMENTS = [
    {"id": "cm_5f74e2a9", "body": "Nice", "article_id": "art_5f74.a:1", "user_id": "usr_2"},
    {"body": "No id", "article_id": "art_5f74.a:1", "user_id": "usr_2"},
    {"id": "cm_2", "body": "x", "article_id": "a-missing-1", "user_id": "usr_2"},
    {"id": "cm_3", "body": "x", "article_id": "art_9", "user_id": "u-missing-2"},
    {"id": "cm_4", "body": _words(501), "article_id": "art_9", "user_id": "usr_3"},
    {"id": "cm_5", "body": _words(500), "article_id": "art_9", "user_id": "usr_3",
     "created_at": "2024-02-01T10:00:00+02:00"},
    {"id": "cm_6", "body": "x", "article_id": "art_3", "user_id": "nobody"},
    {"id": "cm_7", "body": "", "article_id": "art_9", "user_id": "usr_3"},
    {"id": "cm_5f74e2a9", "body": "Same id", "article_id": "art_9", "user_id": "usr_3"},
    {"id": "cm_8", "body": "x", "article_id": "art_9", "user_id": "usr_3",
     "created_at": "yesterday"},
]


def test_articles_and_comments_with_reference_errors(
        srv: ServerProcess, http: httpx.Client, sql: psycopg.Connection[Any]) -> None:
    assert run(srv, http, ndjson(*USERS), "u.ndjson", "users")["status"] == "completed"

    job = run(srv, http, ndjson(*ARTICLES), "articles.ndjson", "articles")
    assert job["status"] == "completed_with_errors"
    assert (job["successful_records"], job["error_records"]) == (3, 6)
    by_row: dict[int, set[str]] = {}
    for e in error_pages(http, job["job_id"]):
        by_row.setdefault(e["row"], set()).add(e["code"])
    assert by_row == {
        3: {"invalid_slug_format"},
        4: {"duplicate_slug"},
        5: {"invalid_author_id"},
        6: {"draft_cannot_have_published_at"},
        7: {"invalid_id_format"},
        8: {"title_required", "body_required", "invalid_status"},  # all problems together
    }
    rows = dict(sql.execute("SELECT slug, id FROM articles").fetchall())
    assert set(rows) == {"hello-world", "no-id-here", "second"}
    assert rows["hello-world"] == "art_5f74.a:1"  # prefixed id unchanged
    assert UUID_RE.fullmatch(rows["no-id-here"])  # generated
    tags = sql.execute("SELECT tags FROM articles WHERE slug = 'hello-world'").fetchone()
    assert tags is not None and tags[0] == ["intro", "news"]
    assert_csv_download_round_trips(srv, http, job)

    job = run(srv, http, ndjson(*COMMENTS), "comments.ndjson", "comments")
    assert job["status"] == "completed_with_errors"
    assert (job["successful_records"], job["error_records"]) == (2, 8)
    by_row = {}
    for e in error_pages(http, job["job_id"]):
        by_row.setdefault(e["row"], set()).add(e["code"])
    assert by_row == {
        2: {"id_required"},
        3: {"invalid_article_id"},
        4: {"invalid_user_id"},
        5: {"body_exceeds_500_words"},
        7: {"invalid_article_id", "invalid_user_id"},  # art_3 was rejected above
        8: {"body_required"},
        9: {"duplicate_id"},
        10: {"invalid_created_at"},
    }
    stored = dict(sql.execute("SELECT id, body FROM comments").fetchall())
    assert stored == {"cm_5f74e2a9": "Nice", "cm_5": _words(500)}
    created = sql.execute("SELECT created_at AT TIME ZONE 'UTC' FROM comments WHERE id = 'cm_5'"
                          ).fetchone()
    assert created is not None and created[0].isoformat() == "2024-02-01T08:00:00"
    assert_csv_download_round_trips(srv, http, job)

    # Rejected records come back as uploaded, including their non-string values.
    lines = [orjson.loads(x) for x in http.get(
        f"/v1/imports/{job['job_id']}/errors", params={"format": "ndjson"}).content.splitlines()]
    assert {line["row"]: line["record"] for line in lines}[3] == COMMENTS[2]


def test_values_of_the_wrong_json_type_get_the_fields_codes(
        srv: ServerProcess, http: httpx.Client) -> None:
    base = {"email": "t@example.com", "name": "T", "role": "reader"}
    job = run(srv, http, ndjson(
        {**base, "id": True},
        {**base, "email": ["t@example.com"]},
        {**base, "email": 42},
        {**base, "role": ["reader"]},
        {**base, "active": "yes"},
        {**base, "created_at": 1700000000},
        {**base, "id": 12345},  # a number is an id like its text
    ), "types.ndjson", "users")
    by_row = {e["row"]: e["code"] for e in error_pages(http, job["job_id"])}
    assert by_row == {1: "invalid_id_format", 2: "invalid_email_format",
                      3: "invalid_email_format", 4: "invalid_role", 5: "invalid_active",
                      6: "invalid_created_at"}
    assert job["successful_records"] == 1

    run(srv, http, ndjson(*USERS), "u.ndjson", "users")
    art = {"title": "t", "body": "b", "author_id": "usr_1", "status": "draft"}
    job = run(srv, http, ndjson({**art, "slug": ["a-b"]}, {**art, "slug": "ok", "tags": "x, y"},
                                {**art, "slug": "tags", "tags": [1, 2]}), "a.ndjson", "articles")
    by_row = {e["row"]: e["code"] for e in error_pages(http, job["job_id"])}
    assert by_row == {1: "invalid_slug_format", 3: "invalid_tags"}


def test_upsert_articles_by_slug_and_id(srv: ServerProcess, http: httpx.Client,
                                        sql: psycopg.Connection[Any]) -> None:
    run(srv, http, ndjson(*USERS), "u.ndjson", "users")
    base = {"title": "t", "body": "b", "author_id": "usr_1", "status": "draft"}
    first = run(srv, http, ndjson({**base, "id": "a_1", "slug": "one"},
                                  {**base, "slug": "two"}), "a.ndjson", "articles")
    assert first["status"] == "completed"
    job = run(srv, http, ndjson(
        {**base, "slug": "two", "title": "by slug"},            # matched by slug
        {**base, "id": "a_1", "slug": "one", "title": "by id"},  # matched by id
        {**base, "id": "a_1", "slug": "one", "title": "later wins"},
        {**base, "slug": "three", "author_id": "ghost"},
    ), "a.ndjson", "articles", mode="upsert")
    assert (job["successful_records"], job["error_records"]) == (3, 1)
    assert codes(error_pages(http, job["job_id"])) == {"invalid_author_id": 1}
    titles = dict(sql.execute("SELECT slug, title FROM articles").fetchall())
    assert titles == {"one": "later wins", "two": "by slug"}


def test_upsert_keeps_the_files_updated_at_else_now(srv: ServerProcess, http: httpx.Client,
                                                    sql: psycopg.Connection[Any]) -> None:
    """README "Decisions": upsert sets ``updated_at`` to the file's value, else to now."""
    user = {"email": "stamp@example.com", "name": "S", "role": "reader"}
    run(srv, http, ndjson(user), "u.ndjson", "users")
    given = "2021-03-04T05:06:07Z"
    run(srv, http, ndjson({**user, "name": "S2", "updated_at": given}), "u.ndjson", "users",
        mode="upsert")
    stored = sql.execute("SELECT updated_at FROM users WHERE email = %s",
                         (user["email"],)).fetchone()
    assert stored and stored[0].isoformat() == "2021-03-04T05:06:07+00:00"
    run(srv, http, ndjson({**user, "name": "S3"}), "u.ndjson", "users", mode="upsert")
    now = sql.execute("SELECT updated_at > now() - interval '5 minutes' FROM users "
                      "WHERE email = %s", (user["email"],)).fetchone()
    assert now and now[0] is True


def test_concurrent_imports_of_one_file_write_each_user_once(
        srv: ServerProcess, http: httpx.Client, sql: psycopg.Connection[Any]) -> None:
    content = USERS_HUGE.read_bytes()
    ids = [post_file(http, content, "users_huge.csv", "users").json()["job_id"]
           for _ in range(2)]
    jobs = [srv.wait_job(i) for i in ids]
    for job in jobs:
        assert job["status"] == "completed_with_errors"
        assert job["successful_records"] + job["error_records"] == 10_000
    # Whichever job wrote a user first, the other one reports it as a duplicate.
    assert sum(j["successful_records"] for j in jobs) == 9667
    assert count(sql, "users") == 9667


def test_missing_ids_are_generated_and_given_ids_kept(
        srv: ServerProcess, http: httpx.Client, sql: psycopg.Connection[Any]) -> None:
    job = run(srv, http, ndjson(
        {"email": "noid@example.com", "name": "No id", "role": "reader"},
        {"id": "usr_5f74:a.b-c_d", "email": "prefixed@example.com", "name": "P",
         "role": "reader", "created_at": "2024-01-01T12:00:00+02:00", "active": "false"},
    ), "u.ndjson", "users")
    assert job["status"] == "completed"
    rows = {r[1]: r for r in sql.execute(
        "SELECT id, email, active, created_at AT TIME ZONE 'UTC' FROM users")}
    assert UUID_RE.fullmatch(rows["noid@example.com"][0])
    assert rows["prefixed@example.com"][0] == "usr_5f74:a.b-c_d"
    assert rows["prefixed@example.com"][2] is False
    assert rows["prefixed@example.com"][3].isoformat() == "2024-01-01T10:00:00"
    assert rows["noid@example.com"][2] is True  # default


# --- listing ----------------------------------------------------------------------------


def test_list_filters_limit_and_cursor(srv: ServerProcess, http: httpx.Client) -> None:
    created = []
    for i in range(5):
        created.append(run(srv, http, ndjson(*_users(f"list{i}", 1)), "u.ndjson", "users"))
    created.append(run(srv, http, ndjson({"id": "x"}), "c.ndjson", "comments"))
    failed = run(srv, http, b"id,email,name,role\n", "h.csv", "users")
    assert failed["status"] == "failed"

    everything = http.get("/v1/imports", params={"limit": 100}).json()
    assert everything["next_cursor"] is None
    all_ids = [j["job_id"] for j in everything["data"]]
    assert len(all_ids) == 7
    # Newest first.
    assert all_ids[0] == failed["job_id"]
    assert all_ids[-1] == created[0]["job_id"]
    for job in everything["data"]:
        assert job.keys() >= JOB_FIELDS

    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = http.get("/v1/imports", params=params).json()
        assert len(page["data"]) <= 2
        seen += [j["job_id"] for j in page["data"]]
        if not page["next_cursor"]:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == all_ids

    users = http.get("/v1/imports", params={"resource": "users"}).json()["data"]
    assert {j["resource"] for j in users} == {"users"} and len(users) == 6
    comments = http.get("/v1/imports", params={"resource": "comments"}).json()["data"]
    assert [j["job_id"] for j in comments] == [created[-1]["job_id"]]
    bad = http.get("/v1/imports", params={"status": "failed"}).json()["data"]
    assert [j["job_id"] for j in bad] == [failed["job_id"]]
    done = http.get("/v1/imports", params={"status": "completed", "resource": "users",
                                           "limit": 3}).json()
    assert len(done["data"]) == 3 and done["next_cursor"]
    assert http.get("/v1/imports", params={"status": "pending"}).json()["data"] == []

    for params in ({"limit": 101}, {"limit": 0}, {"status": "done"}, {"resource": "posts"},
                   {"cursor": "not-a-cursor"}):
        resp = http.get("/v1/imports", params=params)
        assert resp.status_code == 400, (params, resp.text)
        assert resp.json().keys() == {"error", "message", "details", "request_id"}


# --- cancel -----------------------------------------------------------------------------


def test_cancel_pending_then_conflict(idle_srv: ServerProcess) -> None:
    with idle_srv.client() as client:
        job = post_file(client, ndjson(*_users("cancel")), "u.ndjson", "users").json()
        assert job["status"] == "pending"
        resp = client.post(f"/v1/imports/{job['job_id']}/cancel")
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == "cancelled"
        assert resp.json()["completed_at"] is not None
        again = client.post(f"/v1/imports/{job['job_id']}/cancel")
        assert again.status_code == 409
        body = again.json()
        assert body["error"] == "conflict" and "cancelled" in body["message"]
        assert body["request_id"] == again.headers["x-request-id"]
        assert client.get(f"/v1/imports/{job['job_id']}").json()["status"] == "cancelled"
        missing = client.post(f"/v1/imports/{uuid.uuid4()}/cancel")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"


def test_cancel_processing_keeps_committed_batches(slow_srv: ServerProcess) -> None:
    with slow_srv.client() as client:
        resp = post_file(client, USERS_HUGE.read_bytes(), "users_huge.csv", "users")
        job_id = resp.json()["job_id"]
        for _ in range(600):
            job = client.get(f"/v1/imports/{job_id}").json()
            if job["processed_records"] > 0:
                break
            time.sleep(0.01)
        assert job["status"] == "processing", job
        assert 0 < job["progress"] < 1
        assert job["rows_per_sec"] > 0 and job["eta_seconds"] > 0
        assert job["completed_at"] is None and job["total_records"] is None
        resp = client.post(f"/v1/imports/{job_id}/cancel")
        assert resp.status_code == 200, resp.text
        reply = resp.json()
        assert reply["status"] == "cancelled"
        time.sleep(1)  # the batch in flight commits; nothing follows it
        final = client.get(f"/v1/imports/{job_id}").json()
        assert final["status"] == "cancelled"
        assert 0 < final["processed_records"] < 10_000
        # The reply already counts the batch that was in flight: it is the final state.
        for counter in ("processed_records", "successful_records", "error_records"):
            assert reply[counter] == final[counter], (counter, reply, final)
        # A cancelled job tells how far it got, never that it finished its file.
        assert 0 < final["progress"] < 1 and reply["progress"] == final["progress"]
        assert final["successful_records"] + final["error_records"] <= final["processed_records"]
        later = client.get(f"/v1/imports/{job_id}").json()
        assert later["processed_records"] == final["processed_records"]
        assert client.post(f"/v1/imports/{job_id}/cancel").status_code == 409


def test_cancel_finished_job_is_a_conflict(srv: ServerProcess, http: httpx.Client) -> None:
    job = run(srv, http, ndjson(*USERS), "u.ndjson", "users")
    resp = http.post(f"/v1/imports/{job['job_id']}/cancel")
    assert resp.status_code == 409
    assert resp.json()["details"] == {"status": "completed"}
    assert http.get(f"/v1/imports/{job['job_id']}").json()["status"] == "completed"


# --- idempotency --------------------------------------------------------------------------


def test_idempotency_replay_and_conflicts(srv: ServerProcess, http: httpx.Client,
                                          sql: psycopg.Connection[Any]) -> None:
    key = {"Idempotency-Key": f"key-{uuid.uuid4()}"}
    content = ndjson(*_users("idem"))
    first = post_file(http, content, "u.ndjson", "users", headers=key)
    assert first.status_code == 202
    job_id = first.json()["job_id"]
    assert first.headers["location"] == f"/v1/imports/{job_id}"
    srv.wait_job(job_id)

    replay = post_file(http, content, "renamed.ndjson", "users", headers=key)
    assert replay.status_code == 200
    assert replay.json()["job_id"] == job_id
    assert replay.json()["status"] == "completed"  # the existing job, as it is now
    assert replay.headers["location"] == f"/v1/imports/{job_id}"

    for change in ({"content": content + ndjson(*_users("other", 1))},
                   {"resource": "articles"}, {"mode": "upsert"}, {"dry_run": "true"}):
        args = {"content": content, "resource": "users", **change}
        extra = {k: v for k, v in change.items() if k in ("mode", "dry_run")}
        resp = post_file(http, args["content"], "u.ndjson", args["resource"], headers=key,
                         **extra)
        assert resp.status_code == 409, change
        body = resp.json()
        assert body["error"] == "idempotency_conflict"
        assert body["details"]["job_id"] == job_id
    assert count(sql, "import_jobs") == 1
    assert count(sql, "users") == 3


def test_blank_idempotency_key_is_refused(srv: ServerProcess, http: httpx.Client) -> None:
    resp = post_file(http, ndjson(*_users("blank", 1)), "u.ndjson", "users",
                     headers={"Idempotency-Key": ""})
    assert resp.status_code == 400, resp.text
    assert "idempotency-key" in resp.json()["message"].lower()
    resp = post_file(http, ndjson(*_users("long", 1)), "u.ndjson", "users",
                     headers={"Idempotency-Key": "k" * 256})
    assert resp.status_code == 400, resp.text


def test_idempotency_by_url(idle_srv: ServerProcess) -> None:
    key = {"Idempotency-Key": f"url-{uuid.uuid4()}"}
    body = {"resource": "users", "file_url": "http://127.0.0.1:9/users.csv"}
    with idle_srv.client() as client:
        first = client.post("/v1/imports", json=body, headers=key)
        assert first.status_code == 202, first.text
        assert first.json()["file_name"] == "users.csv"
        replay = client.post("/v1/imports", json=body, headers=key)
        assert (replay.status_code, replay.json()["job_id"]) == (200, first.json()["job_id"])
        other = client.post("/v1/imports", json={**body, "file_url": body["file_url"] + "?v=2"},
                            headers=key)
        assert other.status_code == 409
        assert other.json()["error"] == "idempotency_conflict"


def test_concurrent_duplicates_create_one_job(idle_srv: ServerProcess, tmp_path: Path) -> None:
    key = f"race-{uuid.uuid4()}"
    content = ndjson(*_users("race", 50))
    uploads = idle_srv.args[idle_srv.args.index("--data-dir") + 1]
    upload_dir = Path(uploads) / "uploads"
    files_before = len(list(upload_dir.iterdir()))
    n = 16
    barrier = threading.Barrier(n)
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def send() -> None:
        with idle_srv.client() as client:
            barrier.wait()
            resp = post_file(client, content, "race.ndjson", "users",
                             headers={"Idempotency-Key": key})
        with lock:
            results.append(resp)

    threads = [threading.Thread(target=send) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == n
    statuses = Counter(r.status_code for r in results)
    assert statuses == {202: 1, 200: n - 1}, [r.text for r in results if r.status_code >= 300]
    assert len({r.json()["job_id"] for r in results}) == 1
    # The replays' uploads were discarded: one stored file for one job.
    assert len(list(upload_dir.iterdir())) == files_before + 1


def test_a_refused_upload_leaves_no_stored_file(idle_srv: ServerProcess) -> None:
    """Every way an upload is refused after its file was stored deletes that file."""
    upload_dir = Path(idle_srv.args[idle_srv.args.index("--data-dir") + 1]) / "uploads"
    content = ndjson(*_users("refused", 2))
    key = {"Idempotency-Key": f"refused-{uuid.uuid4()}"}
    with idle_srv.client() as client:
        assert post_file(client, content, "u.ndjson", "users", headers=key).status_code == 202
        files_before = sorted(upload_dir.iterdir())
        refused = [
            (post_file(client, content, "u.ndjson", "posts"), 400),  # unknown resource
            (post_file(client, content, "u.ndjson", "users", mode="merge"), 400),
            (post_file(client, b"", "u.ndjson", "users"), 400),  # empty file
            (post_file(client, b"email,name\nx@example.com,X\n", "u.csv", "users"), 422),
            (post_file(client, content, "u.ndjson", "users", headers=key, mode="upsert"), 409),
        ]
        for resp, status in refused:
            assert resp.status_code == status, resp.text
        replay = post_file(client, content, "u.ndjson", "users", headers=key)
        assert replay.status_code == 200, replay.text
    assert sorted(upload_dir.iterdir()) == files_before


# --- request ids --------------------------------------------------------------------------


def test_every_response_carries_a_request_id(srv: ServerProcess, http: httpx.Client) -> None:
    job = run(srv, http, ndjson(*USERS, {"email": "bad"}), "u.ndjson", "users")
    jid = job["job_id"]
    calls = [
        ("GET", "/health"), ("GET", "/v1/imports"), ("GET", f"/v1/imports/{jid}"),
        ("GET", f"/v1/imports/{jid}/errors"), ("GET", f"/v1/imports/{jid}/errors?format=csv"),
        ("GET", f"/v1/imports/{jid}/errors?format=ndjson"), ("GET", "/v1/imports/nope"),
        ("POST", f"/v1/imports/{jid}/cancel"), ("GET", "/v1/imports?limit=500"),
        ("POST", "/v1/imports"), ("DELETE", "/v1/imports"), ("GET", "/no/such/path"),
    ]
    for method, path in calls:
        resp = http.request(method, path)
        generated = resp.headers.get("x-request-id")
        assert generated and len(generated) >= 16, (method, path)
        sent = f"req-{uuid.uuid4().hex[:12]}"
        resp = http.request(method, path, headers={"X-Request-ID": sent})
        assert resp.headers["x-request-id"] == sent, (method, path)
        assert resp.status_code != 500
        if resp.status_code >= 400:
            body = resp.json()
            assert body.keys() == {"error", "message", "details", "request_id"}, (method, path)
            assert body["request_id"] == sent
    # An unusable id (spaces, too long) is replaced rather than echoed.
    resp = http.get("/health", headers={"X-Request-ID": "a b"})
    assert resp.headers["x-request-id"] != "a b"
    # The job remembers the request that created it.
    sent = f"create-{uuid.uuid4().hex[:8]}"
    created = post_file(http, ndjson(*_users("rid", 1)), "u.ndjson", "users",
                        headers={"X-Request-ID": sent})
    assert created.json()["request_id"] == sent
    srv.wait_job(created.json()["job_id"])


# mtime=0: the gzip bytes are part of the test ids, which every pytest-xdist process
# must collect alike (a timestamp differs when two processes straddle a second).
@pytest.mark.parametrize(("name", "content", "fmt"), [
    ("users.csv", b"email,name,role\nf1@example.com,F,admin\n", "csv"),
    ("users.JSONL", b'{"email": "f2@example.com"}\n', "ndjson"),
    ("users.csv.gz", gzip.compress(b"email,name,role\n", mtime=0), "csv"),
    ("upload.bin", b'  [{"email": "f3@example.com"}]', "json"),
    ("upload", b'{"email": "f4@example.com"}\n{"email": "f5@example.com"}\n', "ndjson"),
    ("upload.dat", gzip.compress(b'{"email": "f6@example.com"}\n', mtime=0), "ndjson"),
    ("upload.txt", b"email,name,role\n", "csv"),
])
def test_the_202_names_the_format_the_name_or_content_tells(
        idle_srv: ServerProcess, name: str, content: bytes, fmt: str) -> None:
    with idle_srv.client() as client:
        resp = post_file(client, content, name, "users")
        assert resp.status_code == 202, resp.text
        assert resp.json()["format"] == fmt
        assert client.get(resp.headers["location"]).json()["format"] == fmt
        by_url = client.post("/v1/imports", json={
            "resource": "users", "file_url": f"http://127.0.0.1:9/{name}"})
        assert by_url.status_code == 202, by_url.text
        named = {"users.csv": "csv", "users.JSONL": "ndjson", "users.csv.gz": "csv"}
        assert by_url.json()["format"] == named.get(name)
