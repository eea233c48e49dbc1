"""Files as people have them, imported end to end through a real server process.

Spreadsheet exports: other column spellings, an explicit ``column_map``, and a
header that cannot work (422 with a suggested map). See docs/imports.md.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest

from tests.conftest import ServerProcess
from tests.e2e.test_bad_input import (
    _Files,
    all_errors,
    assert_error,
    file_server,
    post_file,
    run_job,
)

pytestmark = pytest.mark.e2e
__all__ = ["file_server"]  # the fixture, used by name


#: The module server's data directory (its uploads folder is looked at).
DATA_DIRS: list[Path] = []


@pytest.fixture(scope="module")
def srv(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    DATA_DIRS[:] = [tmp_path_factory.mktemp("dialects") / "data"]
    with ServerProcess(pg_url, DATA_DIRS[0],
                       env={"BULKPORT_ALLOW_PRIVATE_URLS": "true"}) as server:
        yield server


@pytest.fixture
def http(srv: ServerProcess) -> Iterator[httpx.Client]:
    with srv.client() as client:
        yield client


def users(header: str, n: int = 3, sep: str = ",", bad: int = 0) -> tuple[bytes, str]:
    """A users file with this header line (columns id, email, name, role in that order)."""
    tag = uuid.uuid4().hex[:10]
    lines = [header]
    for i in range(n):
        email = f"u{i}-{tag}@example.com" if i >= bad else f"not-an-email-{i}"
        lines.append(sep.join([f"{tag}-{i}", email, f"User {i}", "reader"]))
    return ("\r\n".join(lines) + "\r\n").encode(), tag


def stored_names(pg_url: str, tag: str) -> list[str]:
    """The names stored for the users whose id starts with ``tag``."""
    with psycopg.connect(pg_url) as c:
        rows = c.execute("SELECT name FROM users WHERE id LIKE %s ORDER BY name",
                         (f"{tag}%",)).fetchall()
    return [r[0] for r in rows]


# --- step 1: header matching --------------------------------------------------------------


@pytest.mark.parametrize("header", ["Id,Email,Name,Role", " id , EMAIL ,name, Role ",
                                    "ID,EMAIL,NAME,ROLE"])
def test_title_case_and_spaced_headers(srv: ServerProcess, http: httpx.Client,
                                       header: str) -> None:
    body, _ = users(header, 3)
    job = run_job(srv, http, body, "users.csv")
    assert (job["status"], job["successful_records"], job["error_records"]) == (
        "completed", 3, 0), job


def test_separators_in_names(srv: ServerProcess, http: httpx.Client) -> None:
    tag = uuid.uuid4().hex[:10]
    body = (f"Email,Name,Role,Created At,updated-at\r\n"
            f"a-{tag}@example.com,A,reader,2024-01-02T03:04:05Z,2024-01-02T03:04:05Z\r\n"
            ).encode()
    job = run_job(srv, http, body, "users.csv")
    assert (job["status"], job["successful_records"]) == ("completed", 1), job


def test_ndjson_keys_match_too(srv: ServerProcess, http: httpx.Client) -> None:
    tag = uuid.uuid4().hex[:10]
    body = (f'{{"Email": "a-{tag}@example.com", "Name": "A", "ROLE": "reader"}}\n'
            f'{{"e-mail": "b-{tag}@example.com", "Name": "B", "Role": "reader"}}\n').encode()
    job = run_job(srv, http, body, "users.ndjson", column_map='{"e-mail": "email"}')
    assert (job["successful_records"], job["error_records"]) == (2, 0), all_errors(
        http, job["job_id"])


def test_column_map(srv: ServerProcess, http: httpx.Client, pg_url: str) -> None:
    body, tag = users("Kennung,E-Mail-Adresse,Vollständiger Name,Rolle", 4, bad=1)
    cmap = ('{"Kennung": "id", "E-Mail-Adresse": "email", "Vollständiger Name": "name", '
            '"Rolle": "role"}')
    job = run_job(srv, http, body, "users.csv", column_map=cmap)
    assert (job["status"], job["successful_records"], job["error_records"]) == (
        "completed_with_errors", 3, 1), job
    assert stored_names(pg_url, tag) == ["User 1", "User 2", "User 3"]
    # The rejected-records download keeps the file's own headers.
    download = http.get(f"/v1/imports/{job['job_id']}/errors", params={"format": "csv"})
    rows = list(csv.reader(io.StringIO(download.text)))
    assert rows[0] == ["Kennung", "E-Mail-Adresse", "Vollständiger Name", "Rolle", "_row",
                       "_errors"]
    assert rows[1][1] == "not-an-email-0" and rows[1][-1] == "invalid_email_format"


def test_column_map_overrides_matching(srv: ServerProcess, http: httpx.Client,
                                       pg_url: str) -> None:
    # "name" would match the field name; the map sends "Full" there, "name" to the id.
    tag = uuid.uuid4().hex[:10]
    body = f"email,name,Full,role\r\na-{tag}@example.com,{tag}x,Real Name,reader\r\n".encode()
    job = run_job(srv, http, body, "users.csv", column_map='{"Full": "name", "name": "id"}')
    assert job["successful_records"] == 1, job
    assert stored_names(pg_url, tag) == ["Real Name"]


def test_bad_column_maps(http: httpx.Client) -> None:
    body, _ = users("id,email,name,role", 1)
    err = assert_error(post_file(http, body, column_map='{"Mail": "e_mail"}'), 400,
                       "bad_request", "e_mail")
    assert "email" in err["details"]["fields"] and "role" in err["message"]
    err = assert_error(post_file(http, body, column_map='{"a": "email", "b": "email"}'), 400,
                       "bad_request", "same field")
    assert_error(post_file(http, body, column_map="[1, 2]"), 400, "bad_request", "JSON object")
    assert_error(post_file(http, body, column_map="{nope"), 400, "bad_request", "JSON object")
    resp = http.post("/v1/imports", json={"resource": "users", "file_url": "http://x/u.csv",
                                          "column_map": {"a": "nope"}})
    assert_error(resp, 400, "bad_request", "nope")


def test_missing_required_column_is_422_with_a_suggestion(
        srv: ServerProcess, http: httpx.Client) -> None:
    body, _ = users("id,E-mail,Nmae,role", 2)
    uploads = DATA_DIRS[0] / "uploads"
    before = {p for p in uploads.rglob("*") if p.is_file()}
    err = assert_error(post_file(http, body), 422, "missing_required_fields", "email")
    details = err["details"]
    assert details["missing"] == ["email", "name"]
    assert details["headers"] == ["id", "E-mail", "Nmae", "role"]
    assert details["suggested_column_map"] == {"E-mail": "email", "Nmae": "name"}
    assert {p for p in uploads.rglob("*") if p.is_file()} <= before  # upload deleted
    # The suggestion works as the column_map.
    job = run_job(srv, http, body, "users.csv",
                  column_map=orjson.dumps(details["suggested_column_map"]).decode())
    assert (job["status"], job["successful_records"]) == ("completed", 2), job


def test_missing_required_column_by_url(srv: ServerProcess, http: httpx.Client,
                                        file_server: str) -> None:
    body, _ = users("id,E-mail,name,role", 2)
    _Files.files["/dialect-missing.csv"] = body
    resp = http.post("/v1/imports", json={"resource": "users",
                                          "file_url": f"{file_server}/dialect-missing.csv"})
    assert resp.status_code == 202, resp.text
    job = srv.wait_job(resp.json()["job_id"])
    assert job["status"] == "failed", job
    assert "email" in job["failure_reason"] and "E-mail" in job["failure_reason"]
    assert job["error_records"] == 0


def test_column_map_is_part_of_the_idempotency_key(http: httpx.Client) -> None:
    body, _ = users("id,email,name,role", 1)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = http.post("/v1/imports", files={"file": ("u.csv", body)},
                      data={"resource": "users"}, headers=key)
    assert first.status_code == 202, first.text
    again = http.post("/v1/imports", files={"file": ("u.csv", body)},
                      data={"resource": "users"}, headers=key)
    assert again.status_code == 200
    other = http.post("/v1/imports", files={"file": ("u.csv", body)},
                      data={"resource": "users", "column_map": '{"email": "email"}'},
                      headers=key)
    assert_error(other, 409, "idempotency_conflict")


# --- step 2: delimiters -------------------------------------------------------------------


@pytest.mark.parametrize(("sep", "name", "fields"), [
    (";", "users.csv", {}), ("\t", "users.tsv", {}), ("\t", "users.tab", {}),
    ("\t", "users.txt", {"format": "tsv"}), ("|", "users.csv", {}),
    (";", "users.csv", {"delimiter": ";"}), ("\t", "users.csv", {"delimiter": "tab"}),
])
def test_other_delimiters(srv: ServerProcess, http: httpx.Client, pg_url: str, sep: str,
                          name: str, fields: dict[str, str]) -> None:
    body, tag = users(sep.join(["Id", "Email", "Name", "Role"]), 5, sep=sep, bad=1)
    job = run_job(srv, http, body, name, **fields)
    assert (job["format"], job["successful_records"], job["error_records"]) == (
        "csv", 4, 1), job
    assert [e["code"] for e in all_errors(http, job["job_id"])] == ["invalid_email_format"]
    assert stored_names(pg_url, tag) == [f"User {i}" for i in range(1, 5)]


def test_quoted_cells_hold_the_delimiter(srv: ServerProcess, http: httpx.Client,
                                         pg_url: str) -> None:
    tag = uuid.uuid4().hex[:10]
    body = (f'id;email;name;role\r\n{tag}-1;a-{tag}@example.com;"Doe; Jane";reader\r\n'
            f"{tag}-2;b-{tag}@example.com;Smith, John;reader\r\n").encode()
    job = run_job(srv, http, body, "users.csv")
    assert job["successful_records"] == 2, all_errors(http, job["job_id"])
    assert stored_names(pg_url, tag) == ["Doe; Jane", "Smith, John"]


def test_declared_delimiter_wins(srv: ServerProcess, http: httpx.Client) -> None:
    # Read with a comma, the semicolon file has one column: the header lacks fields.
    body, _ = users("id;email;name;role", 2, sep=";")
    err = assert_error(post_file(http, body, delimiter=","), 422, "missing_required_fields")
    assert err["details"]["headers"] == ["id;email;name;role"]
    assert_error(post_file(http, body, delimiter=":"), 400, "bad_request", "delimiter")
    assert_error(post_file(http, body, format="tsv", delimiter=";"), 400, "bad_request", "tab")



# --- step 3: encodings --------------------------------------------------------------------

NAMES = ["José Müller", "Zoë Ærø", "François Señor"]


def accented(tag: str, sep: str = ",") -> str:
    lines = [sep.join(["id", "email", "name", "role"])]
    lines += [sep.join([f"{tag}-{i}", f"e{i}-{tag}@example.com", n, "reader"])
              for i, n in enumerate(NAMES)]
    return "\r\n".join(lines) + "\r\n"


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252", "iso-8859-15"])
def test_declared_single_byte_encodings(srv: ServerProcess, http: httpx.Client, pg_url: str,
                                        encoding: str) -> None:
    tag = uuid.uuid4().hex[:10]
    text = accented(tag, ";")
    if encoding == "cp1252":
        text = text.replace("Zoë Ærø", "Zoë “Ærø” \u2013 €")  # bytes only cp1252 has
    job = run_job(srv, http, text.encode(encoding), "users.csv", encoding=encoding)
    assert (job["status"], job["successful_records"]) == ("completed", 3), all_errors(
        http, job["job_id"])
    expected = sorted(n if encoding != "cp1252" or n != "Zoë Ærø" else "Zoë “Ærø” \u2013 €"
                      for n in NAMES)
    assert stored_names(pg_url, tag) == expected
    assert job["encoding_hint"] is None


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252"])
def test_undeclared_encoding_gets_a_hint(srv: ServerProcess, http: httpx.Client,
                                         encoding: str) -> None:
    tag = uuid.uuid4().hex[:10]
    text = accented(tag)
    if encoding == "cp1252":
        text = text.replace("Zoë Ærø", "Zoë “Ærø”")
    job = run_job(srv, http, text.encode(encoding), "users.csv")
    # Today's rule stays: the rows that are not UTF-8 are malformed, the job says why.
    assert (job["successful_records"], job["error_records"]) == (0, 3), job
    assert {e["code"] for e in all_errors(http, job["job_id"])} == {"malformed_record"}
    assert "cp1252" in job["encoding_hint"] and "encoding=cp1252" in job["encoding_hint"]
    # The hint is said once: GET shows the same.
    again = http.get(f"/v1/imports/{job['job_id']}").json()
    assert again["encoding_hint"] == job["encoding_hint"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-8-sig"])
def test_byte_order_marks(srv: ServerProcess, http: httpx.Client, pg_url: str,
                          encoding: str) -> None:
    tag = uuid.uuid4().hex[:10]
    body = accented(tag, "\t").encode(encoding)
    if encoding == "utf-16-be":
        body = b"\xfe\xff" + body
    job = run_job(srv, http, body, "users.tsv")
    assert (job["status"], job["successful_records"]) == ("completed", 3), all_errors(
        http, job["job_id"])
    assert stored_names(pg_url, tag) == sorted(NAMES)


def test_utf16_ndjson_and_gzip(srv: ServerProcess, http: httpx.Client, pg_url: str) -> None:
    import gzip
    tag = uuid.uuid4().hex[:10]
    lines = [orjson.dumps({"id": f"{tag}-{i}", "Email": f"n{i}-{tag}@example.com", "Name": n,
                           "role": "reader"}).decode() for i, n in enumerate(NAMES)]
    body = gzip.compress("\n".join(lines).encode("utf-16"))
    job = run_job(srv, http, body, "users.ndjson.gz")
    assert (job["status"], job["successful_records"]) == ("completed", 3), all_errors(
        http, job["job_id"])
    assert stored_names(pg_url, tag) == sorted(NAMES)


def test_bad_encoding_is_a_400(http: httpx.Client) -> None:
    body, _ = users("id,email,name,role", 1)
    err = assert_error(post_file(http, body, encoding="ebcdic"), 400, "bad_request", "cp1252")
    assert "utf-16" in err["details"]["allowed"]
