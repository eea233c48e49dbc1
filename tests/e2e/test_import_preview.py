"""``POST /v1/imports/preview`` end to end through a real server process."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from bulkport.gen import GenConfig, build_mix, generate
from tests.conftest import ServerProcess
from tests.e2e.test_bad_input import _Files, all_errors, assert_error, file_server, run_job

pytestmark = pytest.mark.e2e
__all__ = ["file_server"]  # the fixture, used by name


@pytest.fixture(scope="module")
def srv(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(pg_url, tmp_path_factory.mktemp("preview") / "data",
                       env={"BULKPORT_ALLOW_PRIVATE_URLS": "true"}) as server:
        yield server


@pytest.fixture
def http(srv: ServerProcess) -> Iterator[httpx.Client]:
    with srv.client() as client:
        yield client


def post_preview(http: httpx.Client, content: bytes, name: str = "users.csv",
                 **fields: str) -> httpx.Response:
    return http.post("/v1/imports/preview", files={"file": (name, content)},
                     data={"resource": "users", **fields})


def job_count(http: httpx.Client) -> int:
    return len(http.get("/v1/imports", params={"limit": 100}).json()["data"])


def test_preview_of_a_flawed_generator_file_matches_the_import(
        srv: ServerProcess, http: httpx.Client, clean_db: str, tmp_path: Path) -> None:
    generate(GenConfig(out_dir=tmp_path, seed=7, users=400, articles=0, comments=0,
                       mix=build_mix(0.05)))
    body = (tmp_path / "users.csv").read_bytes()
    before = job_count(http)
    resp = post_preview(http, body, limit="300")
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert job_count(http) == before  # no job
    assert (got["format"], got["delimiter"], got["encoding"]) == ("csv", ",", "utf-8")
    assert got["missing_required_fields"] == [] and got["records_read"] == 300
    assert {c["column"]: c["field"] for c in got["columns"]}["email"] == "email"
    # Nothing was written: the import of the same file still sees no duplicates of it.
    job = run_job(srv, http, body, "users.csv")
    errors: dict[int, set[str]] = {}
    for e in all_errors(http, job["job_id"]):
        errors.setdefault(e["row"], set()).add(e["code"])
    first = {row: codes for row, codes in errors.items() if row <= 300}
    assert first, "a 5% flawed file has errors in its first 300 rows"
    shown = {r["row"]: {e["code"] for e in r["errors"]} for r in got["records"]
             if not r["valid"]}
    assert shown == first
    assert [r["row"] for r in got["records"]] == list(range(1, 301))
    valid = [r for r in got["records"] if r["valid"]]
    assert valid and all(r["record"]["email"] for r in valid)


def test_preview_reports_the_mapping(http: httpx.Client) -> None:
    tag = uuid.uuid4().hex[:8]
    body = (f"Kennung;E-mail;Name;Rolle;Notiz\r\n{tag};a-{tag}@example.com;Ann;reader;x\r\n"
            ).encode("cp1252")
    got = post_preview(http, body).json()
    assert got["delimiter"] == ";"
    assert got["columns"][2] == {"column": "Name", "field": "name", "matched_by": "name"}
    assert got["unmapped_columns"] == ["Kennung", "E-mail", "Rolle", "Notiz"]
    assert got["missing_required_fields"] == ["email", "role"]
    assert got["suggested_column_map"] == {"E-mail": "email", "Rolle": "role"}
    [record] = got["records"]
    assert not record["valid"] and {e["code"] for e in record["errors"]} == {
        "email_required", "role_required"}
    # With the suggestion the record is valid and shows the stored values.
    got = post_preview(http, body, column_map=orjson.dumps(got["suggested_column_map"]).decode(),
                       limit="5").json()
    assert got["columns"][1]["matched_by"] == "column_map"
    [record] = got["records"]
    assert record["valid"], record
    assert record["record"]["email"] == f"a-{tag}@example.com"
    assert record["record"]["active"] is True  # the insert default
    assert record["original"]["E-mail"] == f"a-{tag}@example.com"
    assert got["end_of_file"] is True


def test_preview_checks_the_database(srv: ServerProcess, http: httpx.Client) -> None:
    tag = uuid.uuid4().hex[:8]
    body = f"email,name,role\r\ndup-{tag}@example.com,A,reader\r\n".encode()
    assert post_preview(http, body).json()["records"][0]["valid"]
    run_job(srv, http, body, "users.csv")
    [record] = post_preview(http, body).json()["records"]
    assert not record["valid"] and record["errors"][0]["code"].startswith("duplicate")
    comments = b"id,body,article_id,user_id\r\nc-%s,hi,no-such-article,no-such-user\r\n" % (
        tag.encode())
    resp = http.post("/v1/imports/preview", files={"file": ("c.csv", comments)},
                     data={"resource": "comments"})
    [record] = resp.json()["records"]
    # Valid ids, but nothing they reference: the database checks say so.
    assert not record["valid"]
    assert {e["code"] for e in record["errors"]} >= {"invalid_article_id"}, record
    assert all("does not reference" in e["message"] for e in record["errors"]), record


def test_preview_encodings(http: httpx.Client) -> None:
    text = "email\tname\trole\r\nj@example.com\tJosé\treader\r\n"
    got = post_preview(http, text.encode("utf-16"), "u.tsv").json()
    assert (got["encoding"], got["encoding_from_bom"], got["delimiter"]) == ("utf-16", True, "\t")
    assert got["records"][0]["record"]["name"] == "José"
    got = post_preview(http, text.encode("cp1252"), "u.tsv").json()
    assert "cp1252" in got["encoding_hint"] and not got["records"][0]["valid"]
    got = post_preview(http, text.encode("cp1252"), "u.tsv", encoding="cp1252").json()
    assert got["records"][0]["record"]["name"] == "José"


def test_preview_of_a_100_mb_file_is_quick(http: httpx.Client, tmp_path: Path) -> None:
    line = b"someone-%07d@example.com,Some One,reader\r\n"
    rows = 100 * 1024 * 1024 // len(line % 0) + 1
    path = tmp_path / "big.csv"
    with path.open("wb") as f:
        f.write(b"email,name,role\r\n")
        chunk = b"".join(line % i for i in range(10_000))
        for _ in range(rows // 10_000 + 1):
            f.write(chunk)
    assert path.stat().st_size >= 100 * 1024 * 1024
    with path.open("rb") as f:
        started = time.perf_counter()
        resp = http.post("/v1/imports/preview", files={"file": ("big.csv", f)},
                         data={"resource": "users", "limit": "1000"})
        elapsed = time.perf_counter() - started
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert got["records_read"] == 1000 and not got["end_of_file"]
    print(f"preview of {path.stat().st_size:,} bytes: {elapsed:.3f} s")
    assert elapsed < 1.0, elapsed


def test_preview_by_url_reads_only_the_beginning(http: httpx.Client, file_server: str) -> None:
    body = b"email,name,role\r\n" + b"".join(
        b"u%d@example.com,U,reader\r\n" % i for i in range(400_000))  # ~10 MB
    _Files.files["/preview-big.csv"] = body
    resp = http.post("/v1/imports/preview", json={
        "resource": "users", "file_url": f"{file_server}/preview-big.csv", "limit": 10})
    assert resp.status_code == 200, resp.text
    got: dict[str, Any] = resp.json()
    assert got["records_read"] == 10 and [r["row"] for r in got["records"]] == list(
        range(1, 11))


def test_preview_bad_requests(http: httpx.Client) -> None:
    body = b"email,name,role\r\na@b.co,n,reader\r\n"
    assert_error(post_preview(http, body, limit="0"), 400, "bad_request", "limit")
    assert_error(post_preview(http, body, limit="1001"), 400, "bad_request", "limit")
    assert_error(post_preview(http, body, column_map='{"a": "nope"}'), 400, "bad_request")
    assert_error(post_preview(http, b"42", "x.json"), 422, "unreadable_file", "array")
    resp = http.post("/v1/imports/preview", content=b"x", headers={"content-type": "text/csv"})
    assert_error(resp, 415)


def test_a_preview_leaves_no_stored_file(srv: ServerProcess, http: httpx.Client,
                                         file_server: str) -> None:
    """The beginning a preview stores is deleted whether the preview answers or fails."""
    uploads = Path(srv.args[srv.args.index("--data-dir") + 1]) / "uploads"
    before = sorted(uploads.iterdir())
    body = b"email,name,role\r\na@b.co,n,reader\r\n"
    _Files.files["/preview-kept.csv"] = body
    _Files.files["/preview-bad.json"] = b"42"
    answers = [
        (post_preview(http, body), 200),
        (post_preview(http, body, limit="0"), 400),
        (post_preview(http, b"42", "x.json"), 422),
        (http.post("/v1/imports/preview", json={
            "resource": "users", "file_url": f"{file_server}/preview-kept.csv"}), 200),
        (http.post("/v1/imports/preview", json={  # fetched, then found unreadable
            "resource": "users", "file_url": f"{file_server}/preview-bad.json"}), 422),
    ]
    for resp, status in answers:
        assert resp.status_code == status, resp.text
    assert sorted(uploads.iterdir()) == before


def test_a_limit_of_digits_int_refuses_is_a_400(http: httpx.Client) -> None:
    body = b"email,name,role\r\na@b.co,n,reader\r\n"
    assert_error(post_preview(http, body, limit="\u00b2"), 400, "bad_request", "limit")
