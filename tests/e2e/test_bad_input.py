"""Bad input over HTTP: always a clear 4xx or a ``failed`` job with a readable reason.

Never a 500, never a dead worker: after each bad job a good import still
completes. The server may fetch from loopback (``BULKPORT_ALLOW_PRIVATE_URLS``),
so ``file_url`` tests can use a closed local port and a local file server.
"""

from __future__ import annotations

import base64
import gzip
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import ServerProcess, free_port

pytestmark = pytest.mark.e2e

ERROR_KEYS = {"error", "message", "details", "request_id"}
#: One line of this many bytes: far past the longest accepted line (1 MiB by default).
HUGE_LINE_BYTES = 50 * 1024 * 1024


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def srv(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(pg_url, tmp_path_factory.mktemp("bad-input") / "data",
                       env={"BULKPORT_ALLOW_PRIVATE_URLS": "true"}) as server:
        yield server


@pytest.fixture
def http(srv: ServerProcess) -> Iterator[httpx.Client]:
    """A client of the module's server; the server log is checked from this point on."""
    srv.log_mark = srv.log.stat().st_size  # type: ignore[attr-defined]
    with srv.client() as client:
        yield client


class _Files(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self) -> None:
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def file_server() -> Iterator[str]:
    """A local HTTP server of :attr:`_Files.files`, for ``file_url`` imports."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


# --- helpers ----------------------------------------------------------------------------


def good_file() -> bytes:
    tag = uuid.uuid4().hex[:12]
    return orjson.dumps({"email": f"ok-{tag}@example.com", "name": "Ok", "role": "reader"})


def post_file(client: httpx.Client, content: bytes, name: str = "users.csv",
              resource: str = "users", **fields: str) -> httpx.Response:
    return client.post("/v1/imports", files={"file": (name, content)},
                       data={"resource": resource, **fields})


def assert_error(resp: httpx.Response, status: int, code: str | None = None,
                 mentions: str | None = None) -> dict[str, Any]:
    """A 4xx in the common error shape, tied to its X-Request-ID."""
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    assert body.keys() == ERROR_KEYS
    assert body["message"] and not body["message"].startswith(":")
    assert body["request_id"] == resp.headers["x-request-id"]
    if code is not None:
        assert body["error"] == code
    if mentions is not None:
        assert mentions in body["message"], body["message"]
    return body


def assert_still_serving(srv: ServerProcess, client: httpx.Client) -> None:
    """A good import completes, and no worker died or crashed on the way."""
    resp = post_file(client, good_file(), "good.ndjson")
    assert resp.status_code == 202, resp.text
    job = srv.wait_job(resp.json()["job_id"], timeout=60)
    assert (job["status"], job["successful_records"]) == ("completed", 1), job
    with srv.log.open("rb") as f:
        f.seek(srv.log_mark)  # type: ignore[attr-defined]
        log = f.read().decode(errors="replace")
    for sign in ("Traceback", "crashed", "restarting"):
        assert sign not in log, log[log.index(sign) - 2000:][:4000]


def run_job(srv: ServerProcess, client: httpx.Client, content: bytes, name: str,
            resource: str = "users", **fields: str) -> dict[str, Any]:
    resp = post_file(client, content, name, resource, **fields)
    assert resp.status_code == 202, resp.text
    job = srv.wait_job(resp.json()["job_id"], timeout=120)
    assert job["status"] in ("failed", "completed", "completed_with_errors"), job
    if job["failure_reason"]:
        assert not job["failure_reason"].startswith("internal error"), job["failure_reason"]
    return job


def all_errors(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    resp = client.get(f"/v1/imports/{job_id}/errors", params={"limit": 1000})
    assert resp.status_code == 200
    data: list[dict[str, Any]] = resp.json()["data"]
    return data


# --- request-level problems: a 4xx -------------------------------------------------------


def test_unknown_resource(http: httpx.Client) -> None:
    body = assert_error(post_file(http, good_file(), resource="posts"), 400, "bad_request",
                        "posts")
    assert body["details"]["allowed"] == ["users", "articles", "comments"]
    assert_error(http.post("/v1/imports", json={"resource": "posts",
                                                "file_url": "http://example.com/a.csv"}),
                 400, "bad_request", "users, articles, comments")
    assert_error(post_file(http, good_file(), resource=""), 400, mentions="resource")
    resp = http.post("/v1/imports", files={"file": ("a.csv", good_file())})
    assert_error(resp, 400, mentions="resource")


def test_unknown_format(http: httpx.Client) -> None:
    body = assert_error(post_file(http, good_file(), format="xml"), 400, "bad_request", "xml")
    assert body["details"]["allowed"] == ["csv", "ndjson", "json", "tsv"]


def test_unknown_mode(http: httpx.Client) -> None:
    body = assert_error(post_file(http, good_file(), mode="merge"), 400, "bad_request",
                        "merge")
    assert body["details"]["allowed"] == ["insert", "upsert"]
    assert_error(post_file(http, good_file(), dry_run="perhaps"), 400, mentions="dry_run")


def test_empty_file(http: httpx.Client) -> None:
    assert_error(post_file(http, b""), 400, "bad_request", "empty")


def test_missing_file_part(http: httpx.Client) -> None:
    resp = http.post("/v1/imports", data={"resource": "users"},
                     files={"other": ("a.csv", good_file())})
    assert_error(resp, 400, mentions="'file'")
    # A 'file' field sent as text, not as a file.
    resp = http.post("/v1/imports", content=(
        b'--b\r\nContent-Disposition: form-data; name="resource"\r\n\r\nusers\r\n'
        b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\nemail\r\n--b--\r\n'),
        headers={"content-type": "multipart/form-data; boundary=b"})
    assert_error(resp, 400, mentions="'file'")


def test_broken_multipart(http: httpx.Client) -> None:
    for ctype, content in (("multipart/form-data", b"--x\r\nbroken"),
                           ("multipart/form-data; boundary=x", b"--x\r\nbroken")):
        assert_error(http.post("/v1/imports", content=content,
                               headers={"content-type": ctype}), 400, "bad_request")
    two = http.post("/v1/imports", data={"resource": "users"},
                    files=[("file", ("a.csv", b"a")), ("file", ("b.csv", b"b"))])
    assert_error(two, 400, "bad_request", "file")


def test_media_types_ignore_case(http: httpx.Client) -> None:
    resp = http.post("/v1/imports", content=b'{"resource": "users", "file_url": "ftp://x/a"}',
                     headers={"content-type": "Application/JSON; Charset=UTF-8"})
    assert_error(resp, 400, mentions="http://")  # read as JSON: the URL is what is refused
    resp = http.post("/v1/imports", content=(
        b'--B\r\nContent-Disposition: form-data; name="resource"\r\n\r\nusers\r\n'
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.ndjson"\r\n\r\n'
        + good_file() + b"\r\n--B--\r\n"),
        headers={"content-type": "Multipart/Form-Data; boundary=B"})
    assert resp.status_code == 202, resp.text


def test_unsupported_content_type(http: httpx.Client) -> None:
    assert_error(http.post("/v1/imports", content=b"email\na@b.co",
                           headers={"content-type": "text/csv"}), 415, mentions="multipart")
    assert_error(http.post("/v1/imports", data={"resource": "users", "file_url": "http://x/y"}),
                 415, mentions="multipart")
    assert_error(http.post("/v1/imports"), 415)


@pytest.mark.parametrize(("body", "mentions"), [
    (b"{bad", "invalid JSON body"),
    (b"", "invalid JSON body"),
    (b"[1, 2]", "object"),
    (b'"users"', "object"),
    (b"{}", "resource"),
    (b'{"resource": "users"}', "file_url"),
    (b'{"resource": "users", "file_url": 42}', "file_url"),
    (b'{"resource": "users", "file_url": "http://e.com/a", "dry_run": "maybe"}', "dry_run"),
    (b'{"resource": "users", "file_url": "http://e.com/a", "mode": 3}', "mode"),
    (b'{"resource": "us\xe9rs", "file_url": "http://e.com/a"}', "invalid JSON body"),
])
def test_malformed_json_body(http: httpx.Client, body: bytes, mentions: str) -> None:
    resp = http.post("/v1/imports", content=body, headers={"content-type": "application/json"})
    assert_error(resp, 400, "bad_request", mentions)


@pytest.mark.parametrize("url", [
    "ftp://127.0.0.1/users.csv",
    "file:///etc/passwd",
    "gopher://127.0.0.1:70/_x",
    "javascript:alert(1)",
    "/relative/users.csv",
    "users.csv",
    "http://",
    "http:///users.csv",
    "",
])
def test_file_url_needs_http_or_https(http: httpx.Client, url: str) -> None:
    resp = http.post("/v1/imports", json={"resource": "users", "file_url": url})
    assert_error(resp, 400, mentions="http")


@pytest.mark.parametrize("url", [
    "http://[::1/users.csv",           # unbalanced IPv6 bracket
    "http://127.0.0.1:99999/users.csv",  # port out of range
    "http://127.0.0.1/us\x00ers.csv",  # NUL: PostgreSQL text cannot hold it
    "http://127.0.0.1/us\x01ers.csv",
])
def test_file_url_unparseable(http: httpx.Client, url: str) -> None:
    resp = http.post("/v1/imports", json={"resource": "users", "file_url": url})
    assert_error(resp, 400)


def test_impossible_job_ids_and_cursors(http: httpx.Client) -> None:
    for path in ("/v1/imports/%00", "/v1/imports/a%00b/errors", "/v1/imports/x%01"):
        assert_error(http.get(path), 404, "not_found")
    assert_error(http.post("/v1/imports/%00/cancel"), 404, "not_found")
    assert_error(http.get("/v1/imports/no-such-job"), 404, "not_found")
    assert_error(http.get(f"/v1/imports/{uuid.uuid4()}/errors"), 404, "not_found")

    def cursor(parts: Any) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(parts)).decode().rstrip("=")

    for bad in ("!!", "e30", cursor(["not a time", "x"]), cursor([{"a": 1}, "x"]),
                cursor(["2024-01-01T00:00:00+00:00", "a\x00b"]), cursor([1, 2, 3]),
                cursor("x")):
        assert_error(http.get("/v1/imports", params={"cursor": bad}), 400, "bad_request",
                     "cursor")


def test_nul_in_the_uploaded_file_name(srv: ServerProcess, http: httpx.Client) -> None:
    # A raw multipart body: clients percent-encode such names, a hostile one need not.
    resp = http.post("/v1/imports", content=(
        b'--b\r\nContent-Disposition: form-data; name="resource"\r\n\r\nusers\r\n'
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="us\x00ers.ndjson"\r\n'
        b"\r\n" + good_file() + b"\r\n--b--\r\n"),
        headers={"content-type": "multipart/form-data; boundary=b"})
    assert resp.status_code == 202, resp.text
    job = srv.wait_job(resp.json()["job_id"])
    assert job["status"] == "completed"
    assert "\x00" not in job["file_name"]


# --- file-level problems: a failed job with a readable reason ------------------------------


@pytest.mark.parametrize(("content", "name", "reason"), [
    (b"id,email,name,role\n", "header.csv", "no records"),
    (b"id,email,name,role\r\n\r\n\r\n", "header.csv", "no records"),
    (b"  \n\n \t\n", "blank.ndjson", "empty"),
    (b"[]", "empty.json", "no records"),
    (b"42", "number.json", "array"),
    (b'"users"', "string.json", "array"),
    (b"email,email,name\na@b.co,a@b.co,n\n", "dupe-header.csv", "repeats"),
    (b"\x1f\x8b\x08\x00garbage-not-deflate", "broken.csv.gz", "decompress"),
    (gzip.compress(b"email,name,role\n" + b"".join(
        f"{uuid.uuid4()}@example.com,n,reader\n".encode() for _ in range(2000)))[:-100],
     "truncated.csv.gz", "truncated"),
])
def test_unreadable_files_fail_the_job(srv: ServerProcess, http: httpx.Client, content: bytes,
                                       name: str, reason: str) -> None:
    job = run_job(srv, http, content, name)
    assert job["status"] == "failed"
    assert reason in job["failure_reason"], job["failure_reason"]
    assert job["completed_at"] is not None and job["progress"] == 1.0
    assert_still_serving(srv, http)


def test_not_utf8(srv: ServerProcess, http: httpx.Client) -> None:
    tag = uuid.uuid4().hex[:8]
    # Rows in Latin-1 are rejected one by one; the UTF-8 rows around them load.
    csv_body = (f"email,name,role\ncaf\xe9-{tag}@example.com,Z\xfcrich,reader\n"
                f"fine-{tag}@example.com,Fine,reader\n").encode("latin-1")
    job = run_job(srv, http, csv_body, "latin1.csv")
    assert (job["status"], job["successful_records"], job["error_records"]) == (
        "completed_with_errors", 1, 1)
    [entry] = all_errors(http, job["job_id"])
    assert entry["row"] == 1 and entry["code"] == "malformed_record"
    assert "UTF-8" in entry["message"]
    # The download gives the row back, undecodable bytes replaced.
    line = orjson.loads(http.get(f"/v1/imports/{job['job_id']}/errors",
                                 params={"format": "ndjson"}).content)
    assert line["record"]["_raw"][0].startswith("caf\ufffd-")

    nd_body = (f'{{"email":"caf\xe9-{tag}@example.com","name":"n","role":"reader"}}\n'
               f'{{"email":"fine2-{tag}@example.com","name":"n","role":"reader"}}\n'
               ).encode("latin-1")
    job = run_job(srv, http, nd_body, "latin1.ndjson")
    assert (job["successful_records"], job["error_records"]) == (1, 1)
    assert all_errors(http, job["job_id"])[0]["code"] == "malformed_record"

    job = run_job(srv, http, "\xe9mail,name,role\n".encode("latin-1") + b"a@b.co,n,reader\n",
                  "latin1-header.csv")
    assert job["status"] == "failed" and "UTF-8" in job["failure_reason"]
    assert "encoding=cp1252" in job["failure_reason"]

    # UTF-16 with its byte-order mark is read as UTF-16 (docs/imports.md, "Encodings");
    # without the mark it is not UTF-8 either: the header cannot be read.
    job = run_job(srv, http, f"email,name,role\nu16-{tag}@b.co,n,reader\n".encode("utf-16"),
                  "utf16.csv")
    assert (job["status"], job["successful_records"]) == ("completed", 1), job
    job = run_job(srv, http, "email,name,role\na@b.co,n,reader\n".encode("utf-16-le"),
                  "utf16.csv")
    assert job["status"] == "failed"
    assert "utf-16-le" in job["encoding_hint"]
    assert_still_serving(srv, http)


def test_huge_single_line_ndjson(srv: ServerProcess, http: httpx.Client) -> None:
    tag = uuid.uuid4().hex[:8]
    huge = b'{"email":"' + b"a" * HUGE_LINE_BYTES + b'@example.com","name":"n","role":"reader"}'
    body = huge + b"\n" + orjson.dumps(
        {"email": f"after-{tag}@example.com", "name": "n", "role": "reader"}) + b"\n"
    job = run_job(srv, http, body, "huge.ndjson")
    assert (job["status"], job["successful_records"], job["error_records"]) == (
        "completed_with_errors", 1, 1)
    [entry] = all_errors(http, job["job_id"])
    assert entry["row"] == 1 and entry["code"] == "malformed_record"
    assert "longer than" in entry["message"]
    # One line with no newline at all: the only record is rejected the same way.
    job = run_job(srv, http, huge, "huge-no-newline.ndjson")
    assert (job["successful_records"], job["error_records"]) == (0, 1)
    assert_still_serving(srv, http)


def test_huge_single_line_csv(srv: ServerProcess, http: httpx.Client) -> None:
    tag = uuid.uuid4().hex[:8]
    body = (b"email,name,role\n" + b"a" * HUGE_LINE_BYTES + b"@example.com,n,reader\n"
            + f"after-{tag}@example.com,n,reader\n".encode())
    job = run_job(srv, http, body, "huge.csv")
    assert (job["status"], job["successful_records"], job["error_records"]) == (
        "completed_with_errors", 1, 1)
    assert all_errors(http, job["job_id"])[0]["code"] == "malformed_record"
    # The whole file is one 50 MB line: not even a header can be read.
    job = run_job(srv, http, b"a" * HUGE_LINE_BYTES, "one-line.csv")
    assert job["status"] == "failed" and "header" in job["failure_reason"]
    assert_still_serving(srv, http)


def test_records_that_cannot_be_parsed(srv: ServerProcess, http: httpx.Client) -> None:
    tag = uuid.uuid4().hex[:8]
    good = orjson.dumps({"email": f"p-{tag}@example.com", "name": "n", "role": "reader"})
    body = b"\n".join([b"[1, 2]", b"null", b'"text"', b"{not json", good, b"{}"]) + b"\n"
    job = run_job(srv, http, body, "mixed.ndjson")
    assert (job["successful_records"], job["error_records"]) == (1, 5)
    by_row = {e["row"]: e["code"] for e in all_errors(http, job["job_id"])}
    assert by_row[1] == by_row[2] == by_row[3] == by_row[4] == "malformed_record"
    assert by_row[6] in ("email_required", "name_required", "role_required")

    csv_body = (f"email,name,role\nq-{tag}@example.com,n,reader\nonly-two,cols\n"
                f'r-{tag}@example.com,"unterminated,reader\n').encode()
    job = run_job(srv, http, csv_body, "cols.csv")
    assert job["successful_records"] == 1
    assert {e["code"] for e in all_errors(http, job["job_id"])} == {"malformed_record"}

    # A JSON array element that is not JSON is one record; the others load.
    arr = (b"[" + good.replace(b"p-", b"s-") + b', {"email": oops}, '
           + good.replace(b"p-", b"u-") + b"]")
    job = run_job(srv, http, arr, "broken.json")
    assert job["successful_records"] == 2 and job["error_records"] == 1
    assert "not valid JSON" in all_errors(http, job["job_id"])[0]["message"]
    # A JSON array that breaks between elements: the records before the break load.
    arr = b"[" + good.replace(b"p-", b"t-") + b' {"email": "x"}]'
    job = run_job(srv, http, arr, "broken.json")
    assert job["successful_records"] == 1 and job["error_records"] == 1
    assert "skipped" in all_errors(http, job["job_id"])[0]["message"]

    # Random bytes declared as CSV (a header holding NUL: judged by the worker).
    noise = bytes(range(256)) * 64
    job = run_job(srv, http, noise, "noise.csv")
    assert job["status"] in ("failed", "completed_with_errors")
    # Printable noise: its "header" has none of the fields.
    assert_error(post_file(http, (bytes(range(32, 127)) + b"\n") * 64, "noise.csv"), 422,
                 "missing_required_fields")
    assert_still_serving(srv, http)


def test_deeply_nested_json(srv: ServerProcess, http: httpx.Client) -> None:
    # 200 KB of brackets once took minutes and gigabytes in the JSON reader.
    deep = b"[" * 100_000 + b"]" * 100_000
    resp = post_file(http, deep, "deep.json")
    assert resp.status_code == 202
    job = srv.wait_job(resp.json()["job_id"], timeout=30)
    assert (job["status"], job["successful_records"], job["error_records"]) == (
        "completed_with_errors", 0, 1)
    assert "depth limit" in all_errors(http, job["job_id"])[0]["message"]
    job = run_job(srv, http, b'{"email": "d@example.com", "x": ' + deep + b"}", "deep-object.json")
    assert job["error_records"] == 1
    job = run_job(srv, http, deep + b"\n", "deep.ndjson")
    assert (job["error_records"], all_errors(http, job["job_id"])[0]["code"]) == (
        1, "malformed_record")
    assert_still_serving(srv, http)


def test_unreachable_file_url(srv: ServerProcess, http: httpx.Client) -> None:
    url = f"http://127.0.0.1:{free_port()}/users.csv"  # nothing listens there
    resp = http.post("/v1/imports", json={"resource": "users", "file_url": url})
    assert resp.status_code == 202, resp.text
    job = srv.wait_job(resp.json()["job_id"])
    assert job["status"] == "failed"
    assert url in job["failure_reason"] and "internal error" not in job["failure_reason"]
    assert_still_serving(srv, http)


def test_file_url_not_found_and_found(srv: ServerProcess, http: httpx.Client,
                                      file_server: str) -> None:
    resp = http.post("/v1/imports", json={"resource": "users",
                                          "file_url": f"{file_server}/missing.csv"})
    job = srv.wait_job(resp.json()["job_id"])
    assert job["status"] == "failed" and "404" in job["failure_reason"]

    _Files.files["/users.ndjson"] = good_file()
    resp = http.post("/v1/imports", json={"resource": "users",
                                          "file_url": f"{file_server}/users.ndjson"})
    assert resp.status_code == 202
    job = srv.wait_job(resp.json()["job_id"])
    assert (job["status"], job["successful_records"], job["format"]) == (
        "completed", 1, "ndjson")
    assert job["file_name"] == "users.ndjson"
