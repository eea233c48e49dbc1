"""Exports end to end: a real ``bulkport serve`` process driven over HTTP (SPEC §3).

One seeded server per module; a second one without workers, on a database of
its own, holds the big table of the disconnect test and keeps jobs pending;
a third stores export files in S3 (moto's server on loopback, a real S3 API);
a fourth serves a table large enough to be read over two connections.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from tests import export_data
from tests.conftest import ServerProcess, empty_tables, own_database

pytestmark = pytest.mark.e2e

RESOURCES = ("users", "articles", "comments")
ERROR_KEYS = {"error", "message", "details", "request_id"}
STREAM_APP = "bulkport-export-stream"


def _reset(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        empty_tables(c)
        export_data.seed(c)


@pytest.fixture(scope="module")
def srv(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    _reset(pg_url)
    with ServerProcess(pg_url, tmp_path_factory.mktemp("exports-http") / "data") as server:
        yield server


@pytest.fixture
def http(srv: ServerProcess) -> Iterator[httpx.Client]:
    with srv.client() as client:
        yield client


@pytest.fixture(scope="module")
def idle(pg_url: str, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[ServerProcess, str]]:
    """A server without workers, one export stream at a time, ~40 MB of articles."""
    with own_database(pg_url, "bulkport_e2e_exports_idle") as url:
        yield from _idle_server(url, tmp_path_factory)


def _idle_server(url: str, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[tuple[ServerProcess, str]]:
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("INSERT INTO users (id, email, name, role) VALUES ('a', 'a@x.io', 'A', 'admin')")
        c.execute("INSERT INTO articles (id, slug, title, body, author_id, status) "
                  "SELECT 'a' || i, 'a-' || i, 't', repeat('word ', 2000), 'a', 'draft' "
                  "FROM generate_series(1, 4000) i")
    server = ServerProcess(url, tmp_path_factory.mktemp("exports-idle") / "data",
                           workers=0, env={"BULKPORT_EXPORT_STREAMS": "1"}).start()
    try:
        yield server, url
    finally:
        server.stop()


def get(http: httpx.Client, **params: Any) -> httpx.Response:
    return http.get("/v1/exports", params=params)


def ndjson(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in data.splitlines()]


# --- streaming ----------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "media"), [
    ("ndjson", "application/x-ndjson"), ("csv", "text/csv; charset=utf-8"),
    ("json", "application/json"), (None, "application/x-ndjson"),
])
def test_every_format_streams_chunked(http: httpx.Client, fmt: str | None, media: str) -> None:
    r = get(http, resource="articles", **({"format": fmt} if fmt else {}))
    assert r.status_code == 200
    assert r.headers["content-type"] == media
    assert r.headers["transfer-encoding"] == "chunked"
    assert r.headers["x-request-id"]
    assert f'filename="articles.{fmt or "ndjson"}"' in r.headers["content-disposition"]
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(r.text, newline="")))
    elif fmt == "json":
        rows = orjson.loads(r.content)
    else:
        rows = ndjson(r.content)
    assert [row["id"] for row in rows] == sorted(a[0] for a in export_data.articles())


def test_projection_and_filters(http: httpx.Client) -> None:
    r = get(http, resource="users", fields="id,role", role=["admin", "author"],
            active="true", created_at_from="2024-01-05", created_at_to="2024-02-01T00:00:00Z")
    want = sorted(u[0] for u in export_data.users()
                  if u[3] in ("admin", "author") and u[4]
                  and "2024-01-05" <= u[5].isoformat() <= "2024-02-01T00:00:00+00:00")
    rows = ndjson(r.content)
    assert want and [row["id"] for row in rows] == want
    assert all(list(row) == ["id", "role"] for row in rows)

    r = get(http, resource="articles", format="csv", fields="slug,tags", tag="a,b",
            status="archived")
    rows = list(csv.DictReader(io.StringIO(r.text, newline="")))
    want = sorted(a[0] for a in export_data.articles() if "a,b" in a[6] and a[8] == "archived")
    assert want and len(rows) == len(want)
    assert all("a,b" in orjson.loads(row["tags"]) for row in rows)

    r = get(http, resource="comments", fields="id", article_id="cm_0001",
            created_since="2024-01-01")
    want = sorted(c[0] for c in export_data.comments() if c[2] == "cm_0001")
    assert want and [row["id"] for row in ndjson(r.content)] == want


def test_gzip_on_request(http: httpx.Client) -> None:
    plain = get(http, resource="comments", format="csv").content
    with http.stream("GET", "/v1/exports", params={"resource": "comments", "format": "csv"},
                     headers={"Accept-Encoding": "gzip"}) as r:
        raw = b"".join(r.iter_raw())
        assert r.headers["content-encoding"] == "gzip"
        assert "accept-encoding" in r.headers["vary"].lower()
    assert gzip.decompress(raw) == plain
    with http.stream("GET", "/v1/exports", params={"resource": "comments"},
                     headers={"Accept-Encoding": "identity"}) as r:
        assert "content-encoding" not in r.headers


@pytest.mark.parametrize(("params", "fragment", "allowed"), [
    ({"resource": "posts"}, "unknown resource 'posts'", ["users", "articles", "comments"]),
    ({"resource": "users", "format": "xlsx"}, "unknown format 'xlsx'",
     ["csv", "ndjson", "json"]),
    ({"resource": "users", "fields": "id,password"}, "unknown field(s) 'password'",
     ["id", "email", "name", "role", "active", "created_at", "updated_at"]),
    ({"resource": "users", "colour": "red"}, "unknown filter(s) 'colour'", None),
    ({"resource": "users", "created_at_from": "last tuesday"}, "ISO-8601", None),
    ({"resource": "users", "updated_since": "2024-02-30"}, "ISO-8601", None),
    ({"resource": "articles", "status": "deleted"}, "status must be one of",
     ["draft", "published", "archived"]),
    ({"resource": "users", "active": "maybe"}, "active must be true or false",
     ["true", "false"]),
    ({"resource": ["users", "articles"]}, "give resource once", None),
    ({"status": "done"}, "unknown status 'done'", None),
    ({"limit": "1000"}, "limit must be", None),
    ({"limit": "\u00b2"}, "limit must be an integer from 1 to 100", None),  # int() refuses it
    ({"resource": "users", "limit": "0"}, "limit must be a whole number from 1", None),
    ({"resource": "users", "limit": "-3"}, "limit must be a whole number from 1", None),
    ({"resource": "users", "limit": "1.5"}, "limit must be a whole number from 1", None),
    ({"resource": "users", "limit": "ten"}, "limit must be a whole number from 1", None),
    ({"resource": "users", "limit": "9" * 5000}, "limit must be a whole number from 1", None),
    ({"resource": "users", "limit": ["1", "2"]}, "give limit once", None),
    ({"cursor": "garbage"}, "invalid cursor", None),
])
def test_bad_parameters_are_400_with_what_is_allowed(http: httpx.Client, params: dict[str, Any],
                                                     fragment: str,
                                                     allowed: list[str] | None) -> None:
    r = http.get("/v1/exports", params=params, headers={"X-Request-ID": "bad-params-1"})
    assert r.status_code == 400, r.text
    body = r.json()
    assert set(body) == ERROR_KEYS
    assert body["error"] == "bad_request" and body["request_id"] == "bad-params-1"
    assert fragment in body["message"]
    if allowed is not None:
        assert body["details"]["allowed"] == allowed


# --- jobs ---------------------------------------------------------------------------------


def test_export_job_lifecycle(srv: ServerProcess, http: httpx.Client) -> None:
    body = {"resource": "users", "format": "csv", "fields": ["id", "email", "role"],
            "filters": {"role": "admin"}}
    r = http.post("/v1/exports", json=body, headers={"Idempotency-Key": "exp-key-1"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/exports/{job['job_id']}"
    assert job["status"] == "pending" and job["download_url"] is None
    assert job["filters"] == {"role": ["admin"]}
    again = http.post("/v1/exports", json=body, headers={"Idempotency-Key": "exp-key-1"})
    assert again.status_code == 200 and again.json()["job_id"] == job["job_id"]
    other = http.post("/v1/exports", json={**body, "format": "ndjson"},
                      headers={"Idempotency-Key": "exp-key-1"})
    assert other.status_code == 409 and other.json()["error"] == "idempotency_conflict"
    blank = http.post("/v1/exports", json=body, headers={"Idempotency-Key": ""})
    assert blank.status_code == 400, blank.text

    done = srv.wait_job(job["job_id"], "exports")
    assert done["status"] == "completed", done
    assert done["download_url"] == f"/v1/exports/{job['job_id']}/download"
    assert done["expires_at"] > done["completed_at"]
    streamed = get(http, resource="users", format="csv", fields="id,email,role",
                   role="admin").content
    download = http.get(done["download_url"])
    assert download.status_code == 200 and download.content == streamed
    assert done["file_size_bytes"] == len(streamed)
    assert done["record_count"] == sum(1 for u in export_data.users() if u[3] == "admin")

    listed = http.get("/v1/exports", params={"status": "completed", "limit": 100}).json()
    assert job["job_id"] in [j["job_id"] for j in listed["data"]]
    cancel = http.post(f"/v1/exports/{job['job_id']}/cancel")
    assert cancel.status_code == 409 and set(cancel.json()) == ERROR_KEYS


def test_export_job_list_pages_with_a_cursor(http: httpx.Client) -> None:
    ids = {http.post("/v1/exports", json={"resource": "comments", "format": f}).json()["job_id"]
           for f in ("ndjson", "csv", "json")}
    seen: list[str] = []
    cursor = None
    while True:
        page = http.get("/v1/exports", params={"limit": 2, **({"cursor": cursor} if cursor
                                                              else {})}).json()
        seen += [j["job_id"] for j in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert ids <= set(seen) and len(seen) == len(set(seen))


@pytest.mark.parametrize(("fmt", "skip"), [("ndjson", 0), ("csv", 1), ("json", 1)])
def test_limit_peeks_at_the_first_rows(http: httpx.Client, fmt: str, skip: int) -> None:
    content = get(http, resource="users", format=fmt).content
    whole = content.splitlines()
    for n in (1, 3):
        peek = get(http, resource="users", format=fmt, limit=str(n))
        assert peek.status_code == 200, peek.text
        if fmt == "json":
            assert orjson.loads(peek.content) == orjson.loads(content)[:n]
        else:
            assert peek.content.splitlines() == whole[:skip + n]
    big = get(http, resource="users", format="ndjson", limit="1000000").content.splitlines()
    assert big == get(http, resource="users", format="ndjson").content.splitlines()


@pytest.mark.parametrize(("body", "fragment"), [
    ({"format": "csv"}, "resource"),
    ({"resource": "users", "filter": {"role": "admin"}}, "filter"),
    ({"resource": "users", "limit": 5}, "limit"),
    ({"resource": "users", "compression": "zip"}, "compression"),
    ({"resource": "users", "fields": ["nope"]}, "unknown field(s) 'nope'"),
    ({"resource": "users", "filters": {"created_at_to": "soon"}}, "ISO-8601"),
    ({"resource": "users", "filters": []}, "filters"),
])
def test_bad_export_jobs_are_400(http: httpx.Client, body: dict[str, Any], fragment: str) -> None:
    r = http.post("/v1/exports", json=body)
    assert r.status_code == 400 and fragment in r.json()["message"], r.text
    assert http.post("/v1/exports", content=b"{not json",
                     headers={"Content-Type": "application/json"}).status_code == 400


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_an_export_job_can_be_gzipped(srv: ServerProcess, http: httpx.Client, fmt: str) -> None:
    r = http.post("/v1/exports", json={"resource": "articles", "format": fmt,
                                       "compression": "gzip"})
    assert r.status_code == 202, r.text
    assert r.json()["compression"] == "gzip"
    done = srv.wait_job(r.json()["job_id"], "exports")
    assert done["status"] == "completed", done
    download = http.get(done["download_url"])
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/gzip"
    assert "content-encoding" not in download.headers  # the .gz is the file, kept as is
    assert f'.{fmt}.gz"' in download.headers["content-disposition"]
    assert download.content[:2] == b"\x1f\x8b"
    assert len(download.content) == done["file_size_bytes"]
    assert gzip.decompress(download.content) == get(http, resource="articles", format=fmt).content
    plain = http.post("/v1/exports", json={"resource": "articles", "format": fmt}).json()
    assert plain["compression"] == "none"


def test_unknown_export_job_is_404(http: httpx.Client) -> None:
    for path in ("/v1/exports/nope", "/v1/exports/nope/download"):
        r = http.get(path)
        assert r.status_code == 404 and set(r.json()) == ERROR_KEYS
    assert http.post("/v1/exports/nope/cancel").status_code == 404


def test_pending_export_can_be_cancelled(idle: tuple[ServerProcess, str]) -> None:
    server, _ = idle
    with server.client() as http:
        job = http.post("/v1/exports", json={"resource": "users"}).json()
        assert job["status"] == "pending"
        assert http.get(f"/v1/exports/{job['job_id']}/download").status_code == 409
        r = http.post(f"/v1/exports/{job['job_id']}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        assert http.post(f"/v1/exports/{job['job_id']}/cancel").status_code == 409


# --- disconnects --------------------------------------------------------------------------


def _stream_backends(url: str) -> list[tuple[int, str, str]]:
    with psycopg.connect(url, autocommit=True) as c:
        return c.execute("SELECT pid, state, query FROM pg_stat_activity "
                         "WHERE application_name = %s AND datname = current_database() "
                         "ORDER BY pid", (STREAM_APP,)).fetchall()


def _settled(url: str, done: Callable[[dict[int, str]], bool], seconds: float = 10
             ) -> dict[int, str]:
    """The states of the stream backends (by pid) once ``done`` holds, or after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        states = {p: s for p, s, _ in _stream_backends(url)}
        if done(states) or time.monotonic() > deadline:
            return states
        time.sleep(0.05)


@contextmanager
def paused_stream(server: ServerProcess, resource: str, http: httpx.Client | None = None
                  ) -> Iterator[Iterator[bytes]]:
    """A streaming export whose reader takes chunks only when asked (a paused client).

    Yields the chunk iterator; it is kept open (a dropped iterator closes the
    response) until the block ends, which closes the connection mid-stream.
    """
    with contextlib.ExitStack() as stack:
        if http is None:
            http = stack.enter_context(httpx.Client(base_url=server.base, timeout=30))
        r = stack.enter_context(http.stream("GET", "/v1/exports", params={"resource": resource},
                                            headers={"Accept-Encoding": "identity"}))
        yield r.iter_raw(64 * 1024)


def test_client_disconnect_stops_the_query_and_frees_the_connection(
        idle: tuple[ServerProcess, str]) -> None:
    server, url = idle
    with paused_stream(server, "articles") as chunks:
        assert next(chunks).startswith(b'{"id":"a')
        # The client stops reading: the server's send blocks, PostgreSQL blocks on it.
        (pid, query), = [(p, q) for p, s, q in _stream_backends(url) if s == "active"]
        assert query.startswith("COPY")
    # Leaving the block closed the connection mid-stream.
    states = _settled(url, lambda states: states.get(pid) == "idle")
    assert states[pid] == "idle", "the query still runs, or its connection was closed"
    assert set(states.values()) == {"idle"}
    with server.client() as http:  # the pool still serves exports
        assert get(http, resource="users", format="csv", fields="id").content == b"id\na\n"
    assert pid in {p for p, _, _ in _stream_backends(url)}


def test_a_stream_that_fails_midway_is_cut_never_complete(
        idle: tuple[ServerProcess, str]) -> None:
    server, url = idle
    with paused_stream(server, "articles") as chunks:
        next(chunks)
        (pid,) = [p for p, s, _ in _stream_backends(url) if s == "active"]
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(httpx.RemoteProtocolError):  # "incomplete chunked read"
            for _ in chunks:
                pass
    with server.client() as http:  # the pool replaced the dead connection
        assert get(http, resource="users", format="csv", fields="id").content == b"id\na\n"


def test_busy_export_connections_are_a_503(idle: tuple[ServerProcess, str]) -> None:
    server, _ = idle
    with httpx.Client(base_url=server.base, timeout=30) as http:
        with paused_stream(server, "articles", http) as chunks:
            next(chunks)  # the only export connection is taken by this paused stream
            busy = get(http, resource="users")
            assert busy.status_code == 503, busy.text
            assert busy.json()["error"] == "too_many_exports"
        assert get(http, resource="users", format="csv", fields="id").content == b"id\na\n"


# --- round trip ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_round_trip_over_http(srv: ServerProcess, http: httpx.Client, pg_url: str,
                              fmt: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as c:
        before = export_data.snapshot(c)
    first = {r: get(http, resource=r, format=fmt).content for r in RESOURCES}
    with psycopg.connect(pg_url, autocommit=True) as c:
        export_data.empty_resources(c)
    for resource in RESOURCES:  # users -> articles -> comments
        r = http.post("/v1/imports", data={"resource": resource},
                      files={"file": (f"{resource}.{fmt}", first[resource])})
        assert r.status_code == 202, r.text
        job = srv.wait_job(r.json()["job_id"])
        assert (job["status"], job["error_records"]) == ("completed", 0), job
    with psycopg.connect(pg_url, autocommit=True) as c:
        assert export_data.snapshot(c) == before
    assert {r: get(http, resource=r, format=fmt).content for r in RESOURCES} == first


# --- S3 -----------------------------------------------------------------------------------


@pytest.fixture
def s3_db(pg_url: str) -> Iterator[str]:
    with own_database(pg_url, "bulkport_e2e_exports_s3") as url:
        yield url


def test_s3_storage_gives_presigned_downloads(s3_db: str, tmp_path: Path,
                                              s3_endpoint: str) -> None:
    import boto3

    creds = {"aws_access_key_id": "test-key", "aws_secret_access_key": "test-secret",
             "region_name": "us-east-1"}
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, **creds)
    s3.create_bucket(Bucket="exports-bucket")
    with psycopg.connect(s3_db, autocommit=True) as c:
        export_data.seed(c)
    data_dir = tmp_path / "data"
    server = ServerProcess(s3_db, data_dir, workers=1, env={
        "BULKPORT_S3_BUCKET": "exports-bucket", "BULKPORT_S3_ENDPOINT_URL": s3_endpoint,
        "BULKPORT_S3_REGION": "us-east-1", "BULKPORT_S3_ACCESS_KEY_ID": "test-key",
        "BULKPORT_S3_SECRET_ACCESS_KEY": "test-secret", "BULKPORT_S3_URL_TTL_SECONDS": "600",
    }).start()
    try:
        with server.client() as http:
            job = http.post("/v1/exports", json={"resource": "articles", "format": "ndjson"}
                            ).json()
            done = server.wait_job(job["job_id"], "exports")
            assert done["status"] == "completed", done
            url = done["download_url"]
            assert url.startswith(f"{s3_endpoint}/exports-bucket/exports/")
            assert "X-Amz-Signature=" in url and "X-Amz-Expires=600" in url
            streamed = get(http, resource="articles").content
            fetched = httpx.get(url)  # no credentials: the signature is the authorisation
            assert fetched.status_code == 200 and fetched.content == streamed
            assert "attachment" in fetched.headers["content-disposition"]
            redirect = http.get(f"/v1/exports/{job['job_id']}/download")
            assert redirect.status_code == 307
            assert redirect.headers["location"].startswith(f"{s3_endpoint}/exports-bucket/")
            gz = http.post("/v1/exports", json={"resource": "articles", "format": "ndjson",
                                                "compression": "gzip"}).json()
            gz_done = server.wait_job(gz["job_id"], "exports")
            assert gz_done["status"] == "completed", gz_done
            gz_fetched = httpx.get(gz_done["download_url"])
            assert gz_fetched.headers["content-type"] == "application/gzip"
            assert gz_fetched.headers["content-disposition"].endswith('.ndjson.gz"')
            assert gzip.decompress(gz_fetched.content) == streamed
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="exports-bucket")["Contents"])
        assert keys == sorted([f"exports/export-{job['job_id']}.ndjson",
                               f"exports/export-{gz['job_id']}.ndjson.gz"])
        assert list((data_dir / "exports").iterdir()) == []  # staged file removed
    finally:
        server.stop()


# --- a table large enough to be read in parallel -------------------------------------------


@pytest.fixture(scope="module")
def large(pg_url: str, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[ServerProcess, str]]:
    """A server without workers on ~90,000 users: over the split threshold."""
    with own_database(pg_url, "bulkport_e2e_exports_large") as url:
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("""
                INSERT INTO users (id, email, name, role, active, created_at)
                SELECT md5(i::text), 'u' || i || '@example.com',
                       CASE WHEN i % 7 = 0 THEN '=cmd, "' || i || '"' ELSE 'Zoë ' || i END,
                       (ARRAY['admin', 'author', 'reader'])[1 + i % 3], i % 5 <> 0,
                       timestamptz '2020-01-01' + i * interval '1.5 seconds'
                FROM generate_series(1, 90000) i""")
            pages = c.execute("SELECT pg_relation_size('users') / 8192").fetchone()
        from bulkport.pipeline.export.lanes import SPLIT_MIN_PAGES

        assert pages and pages[0] >= SPLIT_MIN_PAGES
        server = ServerProcess(url, tmp_path_factory.mktemp("exports-large") / "data",
                               workers=0).start()
        try:
            yield server, url
        finally:
            server.stop()


@pytest.mark.parametrize(("fmt", "filters"), [
    ("csv", {}), ("ndjson", {"role": ["admin"]}), ("json", {"active": ["false"]}),
])
def test_a_large_export_read_over_two_connections_is_exact(
        large: tuple[ServerProcess, str], fmt: str, filters: dict[str, Any]) -> None:
    server, url = large
    with server.client() as http:
        r = get(http, resource="users", format=fmt, **filters)
    assert r.status_code == 200
    assert r.content == export_data.export_bytes(url, "users", fmt, None, filters)
    # Both connections of the stream stay in their pools, idle, in no transaction.
    states = [s for _, s, _ in _stream_backends(url)]
    assert states == ["idle", "idle"]


def test_a_large_export_cut_short_frees_both_connections(
        large: tuple[ServerProcess, str]) -> None:
    server, url = large
    with paused_stream(server, "users") as chunks:
        assert next(chunks).startswith(b'{"id":"')
    states = _settled(url, lambda states: list(states.values()) == ["idle", "idle"])
    assert list(states.values()) == ["idle", "idle"]
    with server.client() as http:
        assert get(http, resource="users", format="csv", fields="id").status_code == 200


def test_limit_on_a_large_table_reads_the_first_rows(large: tuple[ServerProcess, str]) -> None:
    server, url = large
    with psycopg.connect(url) as c:
        first = [r[0] for r in c.execute("SELECT id FROM users ORDER BY id LIMIT 7")]
    with server.client() as http:
        peek = get(http, resource="users", format="ndjson", fields="id", limit="7")
    assert peek.status_code == 200, peek.text
    assert [row["id"] for row in ndjson(peek.content)] == first
