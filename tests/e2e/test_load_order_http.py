"""Load order over HTTP: ``wait_for_parents`` on POST /v1/imports and ``waiting_for`` in
the status, against a real server without workers (its jobs stay pending)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess

pytestmark = pytest.mark.e2e

USERS = b"id,email,name,role\nu1,a@example.com,A,admin\n"
COMMENTS = b"id,body,article_id,user_id\nc1,hi,a1,u1\n"


@pytest.fixture(scope="module")
def srv(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(pg_url, tmp_path_factory.mktemp("load-order") / "data", workers=0,
                       env={"BULKPORT_ALLOW_PRIVATE_URLS": "true"}) as server:
        yield server


@pytest.fixture
def http(srv: ServerProcess, clean_db: str) -> Iterator[httpx.Client]:
    """A client of the module's server, on emptied tables."""
    with srv.client() as client:
        yield client


def _post(http: httpx.Client, resource: str, body: bytes, key: str | None = None,
          **fields: str) -> httpx.Response:
    return http.post("/v1/imports", data={"resource": resource, **fields},
                     files={"file": ("f.csv", body)},
                     headers={"Idempotency-Key": key} if key else {})


def test_the_status_names_the_jobs_a_job_waits_for(http: httpx.Client) -> None:
    users = _post(http, "users", USERS).json()["job_id"]
    articles = _post(http, "articles", b"slug,title,body,author_id,status\n").json()["job_id"]
    created = _post(http, "comments", COMMENTS)
    assert created.status_code == 202
    comments = created.json()["job_id"]
    assert created.json()["waiting_for"] == [users, articles]
    assert http.get(f"/v1/imports/{comments}").json()["waiting_for"] == [users, articles]
    listed = {j["job_id"]: j["waiting_for"] for j in http.get("/v1/imports").json()["data"]}
    assert listed == {users: [], articles: [users], comments: [users, articles]}
    # A cancelled parent holds nothing back.
    assert http.post(f"/v1/imports/{users}/cancel").status_code == 200
    assert http.get(f"/v1/imports/{comments}").json()["waiting_for"] == [articles]


@pytest.mark.parametrize("value", ["false", "0"])
def test_multipart_opt_out(http: httpx.Client, value: str) -> None:
    _post(http, "users", USERS)
    job = _post(http, "comments", COMMENTS, wait_for_parents=value).json()
    assert job["waiting_for"] == []


def test_json_body_opt_out(http: httpx.Client) -> None:
    users = _post(http, "users", USERS).json()["job_id"]
    body: dict[str, Any] = {"resource": "comments", "file_url": "http://127.0.0.1:9/c.csv"}
    waits = http.post("/v1/imports", json=body).json()
    assert waits["waiting_for"] == [users]
    starts = http.post("/v1/imports", json={**body, "wait_for_parents": False}).json()
    assert starts["waiting_for"] == []


def test_a_bad_value_is_a_400(http: httpx.Client) -> None:
    resp = _post(http, "comments", COMMENTS, wait_for_parents="maybe")
    assert resp.status_code == 400
    assert "wait_for_parents" in resp.json()["message"]


def test_the_option_is_part_of_the_idempotency_fingerprint(http: httpx.Client) -> None:
    first = _post(http, "comments", COMMENTS, key="k1")
    assert first.status_code == 202
    assert _post(http, "comments", COMMENTS, key="k1").status_code == 200
    assert _post(http, "comments", COMMENTS, key="k1", wait_for_parents="true"
                 ).status_code == 200  # the default, said out loud
    other = _post(http, "comments", COMMENTS, key="k1", wait_for_parents="false")
    assert other.status_code == 409
    assert other.json()["details"]["job_id"] == first.json()["job_id"]


def test_openapi_declares_the_option_and_the_status_field(http: httpx.Client) -> None:
    doc = http.get("/openapi.json").json()
    body = doc["paths"]["/v1/imports"]["post"]["requestBody"]["content"]
    multipart = body["multipart/form-data"]["schema"]["properties"]["wait_for_parents"]
    assert multipart["type"] == "boolean" and multipart["default"] is True
    by_url = body["application/json"]["schema"]["properties"]["wait_for_parents"]
    assert by_url["type"] == "boolean" and by_url["default"] is True
    job = doc["components"]["schemas"]["ImportJob"]["properties"]["waiting_for"]
    assert job["type"] == "array"
