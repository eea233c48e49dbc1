"""``GET /v1/imports/{id}/errors?code=…``: only the errors of one code, in every format."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from tests.conftest import USERS_HUGE, ServerProcess, empty_tables

pytestmark = pytest.mark.e2e

HUGE_CODES = {"invalid_email_format": 201, "invalid_role": 167, "duplicate_email": 33}


@pytest.fixture(scope="module")
def job(pg_url: str, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[tuple[ServerProcess, str]]:
    with psycopg.connect(pg_url, autocommit=True) as c:
        empty_tables(c)
    server = ServerProcess(pg_url, tmp_path_factory.mktemp("errors-code") / "data").start()
    try:
        with server.client() as c, USERS_HUGE.open("rb") as f:
            r = c.post("/v1/imports", data={"resource": "users"},
                       files={"file": ("users_huge.csv", f, "text/csv")})
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        server.wait_job(job_id)
        yield server, job_id
    finally:
        server.stop()


def all_pages(c: httpx.Client, job_id: str, **params: Any) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    cursor = None
    while True:
        q = {**params, **({"cursor": cursor} if cursor else {})}
        r = c.get(f"/v1/imports/{job_id}/errors", params=q)
        assert r.status_code == 200, r.text
        page = r.json()
        entries.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            return entries


@pytest.mark.parametrize(("code", "count"), sorted(HUGE_CODES.items()))
def test_json_pages_hold_only_that_code(job: tuple[ServerProcess, str], code: str,
                                        count: int) -> None:
    server, job_id = job
    with server.client() as c:
        every = all_pages(c, job_id, limit=1000)
        only = all_pages(c, job_id, limit=7, code=code)  # small pages: cursors within a code
    assert {e["code"] for e in only} == {code}
    assert len(only) == count
    assert only == [e for e in every if e["code"] == code]


def test_downloads_hold_only_records_with_that_code(job: tuple[ServerProcess, str]) -> None:
    server, job_id = job
    with server.client() as c:
        text = c.get(f"/v1/imports/{job_id}/errors",
                     params={"format": "csv", "code": "invalid_role"}).text
        lines = c.get(f"/v1/imports/{job_id}/errors",
                      params={"format": "ndjson", "code": "duplicate_email"}).content
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == HUGE_CODES["invalid_role"]
    assert all("invalid_role" in r["_errors"].split(";") for r in rows)
    records = [orjson.loads(line) for line in lines.splitlines()]
    assert len(records) == HUGE_CODES["duplicate_email"]
    assert all(any(e["code"] == "duplicate_email" for e in r["errors"]) for r in records)


def test_unknown_code_is_an_empty_page_and_a_bad_one_a_400(job: tuple[ServerProcess, str]
                                                          ) -> None:
    server, job_id = job
    with server.client() as c:
        empty = c.get(f"/v1/imports/{job_id}/errors", params={"code": "no_such_code"})
        bad = c.get(f"/v1/imports/{job_id}/errors", params={"code": "Robert'); DROP"})
    assert empty.status_code == 200
    assert empty.json() == {"data": [], "next_cursor": None}
    assert bad.status_code == 400
    assert set(bad.json()) == {"error", "message", "details", "request_id"}


def test_openapi_documents_the_code_parameter(job: tuple[ServerProcess, str]) -> None:
    server, _ = job
    doc = httpx.get(f"{server.base}/openapi.json").json()
    params = doc["paths"]["/v1/imports/{job_id}/errors"]["get"]["parameters"]
    code = next(p for p in params if p["name"] == "code")
    assert code["in"] == "query"
    assert "description" in code
