"""api/params.py, api/export_params.py and the upload form: the declared request parameters.

The query models are read the way FastAPI reads them (``Annotated[Model, Query()]``
on a route of the real app, called in-process without a database), and the
OpenAPI document is checked to describe them.
"""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from fastapi import FastAPI, Query, Request
from fastapi.testclient import TestClient

from bulkport.api.app import create_app
from bulkport.api.errors import install_error_handlers
from bulkport.api.export_params import ExportQuery
from bulkport.config import Settings
from bulkport.errors import BadRequest


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return create_app(Settings()).openapi()


@pytest.fixture(scope="module")
def client() -> TestClient:
    """A route that reads an :class:`ExportQuery` and says what it understood."""
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/q")
    def read(request: Request, query: Annotated[ExportQuery, Query()]) -> dict[str, Any]:
        if not query.streams:
            status, limit, after = query.job_page()
            return {"page": [status, limit, after is not None]}
        spec = query.spec(request.query_params)
        return {"stream": [spec.resource.name, spec.format.value, list(spec.fields),
                           spec.filters, spec.limit]}

    return TestClient(app)


def params_of(openapi: dict[str, Any], path: str) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in openapi["paths"][path]["get"]["parameters"]}


def test_the_export_query_is_in_the_openapi_document(openapi: dict[str, Any]) -> None:
    params = params_of(openapi, "/v1/exports")
    assert set(params) == {"resource", "format", "fields", "limit", "status", "cursor"}
    assert all(p["in"] == "query" and p["description"] for p in params.values())
    assert "array" in str(params["fields"]["schema"])  # repeatable


def test_the_import_queries_are_in_the_openapi_document(openapi: dict[str, Any]) -> None:
    listing = params_of(openapi, "/v1/imports")
    assert set(listing) == {"status", "resource", "limit", "cursor"}
    assert (listing["limit"]["schema"]["minimum"], listing["limit"]["schema"]["maximum"]) == (
        1, 100)
    errors = params_of(openapi, "/v1/imports/{job_id}/errors")
    assert set(errors) == {"job_id", "format", "limit", "cursor", "code"}
    assert errors["limit"]["schema"]["default"] == 100


def test_the_upload_form_is_described_as_sent(openapi: dict[str, Any]) -> None:
    form = openapi["paths"]["/v1/imports"]["post"]["requestBody"]["content"][
        "multipart/form-data"]["schema"]
    assert form["required"] == ["file", "resource"]
    file = form["properties"]["file"]
    assert (file["type"], file["format"]) == ("string", "binary")
    assert "contentSchema" in file  # the records it holds (api/record_schemas.py)
    assert form["properties"]["resource"]["enum"] == ["users", "articles", "comments"]
    # A form field is text or absent: no null branches, no null defaults, no titles.
    fields = {k: v for k, v in form["properties"].items() if k != "file"}
    assert "null" not in str(fields) and "title" not in str(fields) and "None" not in str(fields)
    preview = openapi["paths"]["/v1/imports/preview"]["post"]["requestBody"]["content"][
        "multipart/form-data"]["schema"]
    assert set(preview["properties"]) == set(form["properties"]) | {"limit"}


def test_without_resource_the_query_is_a_page_of_jobs(client: TestClient) -> None:
    assert client.get("/q").json() == {"page": [None, 20, False]}
    # A repeated listing parameter: the last one counts, as it always did.
    got = client.get("/q?status=failed&status=pending&limit=7&limit=5")
    assert got.json() == {"page": ["pending", 5, False]}


@pytest.mark.parametrize(("query", "fragment"), [
    ("format=csv", "unknown parameter(s) format"),
    ("colour=red&fields=id", "unknown parameter(s) colour, fields"),
    ("status=done", "unknown status 'done'"),
    ("limit=101", "limit must be an integer from 1 to 100"),
    ("limit=%C2%B2", "limit must be an integer from 1 to 100"),
    ("cursor=garbage", "invalid cursor"),
])
def test_a_bad_page_query_is_a_400(client: TestClient, query: str, fragment: str) -> None:
    resp = client.get(f"/q?{query}")
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "bad_request" and fragment in resp.json()["message"]


def test_with_resource_every_other_name_is_a_filter(client: TestClient) -> None:
    got = client.get("/q?resource=articles&status=draft&status=published&fields=id,slug"
                     "&fields=status&limit=3&format=csv").json()
    assert got == {"stream": ["articles", "csv", ["id", "slug", "status"],
                              {"status": ["draft", "published"]}, 3]}


@pytest.mark.parametrize(("query", "fragment"), [
    ("resource=users&resource=articles", "give resource once, not 2 times"),
    ("resource=users&format=csv&format=json", "give format once"),
    ("resource=users&limit=1&limit=2", "give limit once"),
    ("resource=users&cursor=x", "unknown filter(s) 'cursor'"),
    ("resource=users&status=x", "unknown filter(s) 'status'"),
    ("resource=", "'resource' is required"),
])
def test_a_bad_stream_query_is_a_400(client: TestClient, query: str, fragment: str) -> None:
    resp = client.get(f"/q?{query}")
    assert resp.status_code == 400, resp.text
    assert fragment in resp.json()["message"]


def test_the_model_alone_reads_a_page() -> None:
    query = ExportQuery.model_validate({"status": ["completed"], "limit": "3"})
    assert query.job_page() == ("completed", 3, None)
    with pytest.raises(BadRequest, match="unknown parameter"):
        ExportQuery.model_validate({"tag": "x"}).job_page()
