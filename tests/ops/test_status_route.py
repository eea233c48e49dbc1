"""``GET /v1/imports/{id}`` is answered by the lean route, exactly as FastAPI's route did.

The lean route (bulkport.api.status_route) sits in front of the FastAPI route
of the same path, which stays for the OpenAPI document. The tests send the
same requests to the app twice, once as it is and once with the lean route
taken out of the router (so that the FastAPI route answers them), and compare
the answers: status, every header, the body bytes. A fixed ``X-Request-ID``
makes the error bodies comparable. A counter on the lean route's call of the
shared answer shows that the first pass really went through it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bulkport.api import imports, status_route
from bulkport.config import Settings
from tests.conftest import run_jobs
from tests.ops.conftest import AppClient

CSV = (b"email,name,role\n" + b"".join(b"bad-%d,User,reader\n" % i for i in range(3))
       + b"ok1@example.com,User,reader\n")
HEADERS = {"X-Request-ID": "status-route-test"}


def _requests(finished: str, pending: str) -> list[tuple[str, str]]:
    return [
        ("GET", f"/v1/imports/{finished}"),
        ("GET", f"/v1/imports/{finished}"),  # the first errors from the cache this time
        ("GET", f"/v1/imports/{finished}?unknown=1"),
        ("GET", f"/v1/imports/{pending}"),  # pending: waiting_for is read too
        ("GET", "/v1/imports/no-such-job"),
        ("GET", "/v1/imports/bad%00id"),  # a control character: a 404 before any query
        ("GET", "/v1/imports/%C3%A9t%C3%A9"),
        ("HEAD", f"/v1/imports/{finished}"),
        ("POST", f"/v1/imports/{finished}"),
        ("DELETE", f"/v1/imports/{finished}"),
        ("GET", f"/v1/imports/{finished}/"),
    ]


def _answers(client: TestClient, requests: list[tuple[str, str]]
             ) -> list[tuple[int, list[tuple[str, str]], bytes]]:
    answers = []
    for method, path in requests:
        resp = client.request(method, path, headers=HEADERS, follow_redirects=False)
        answers.append((resp.status_code, sorted(resp.headers.items()), resp.content))
    return answers


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Job ids the lean route answered (it still calls the real function)."""
    calls: list[str] = []
    real = imports.import_status_response

    def counted(state: Any, job_id: str) -> Any:
        calls.append(job_id)
        return real(state, job_id)

    monkeypatch.setattr(status_route, "import_status_response", counted)
    return calls


def _jobs(client: TestClient, pg_url: str, tmp_path: Path) -> tuple[str, str]:
    """A finished import with three rejected records, and a pending one."""
    resp = client.post("/v1/imports", data={"resource": "users"},
                       files={"file": ("u.csv", CSV, "text/csv")})
    assert resp.status_code == 202, resp.text
    finished = resp.json()["job_id"]
    run_jobs(pg_url, Settings(data_dir=tmp_path / "data"))
    resp = client.post("/v1/imports", data={"resource": "users"},
                       files={"file": ("u.csv", CSV, "text/csv")})
    assert resp.status_code == 202, resp.text
    return finished, resp.json()["job_id"]


def _lean_route(client: TestClient) -> Any:
    routes = client.app.router.routes  # type: ignore[attr-defined]
    lean = [r for r in routes if isinstance(r, status_route.LeanRoute)]
    assert len(lean) == 1 and routes[0] is lean[0]
    return lean[0]


def test_the_lean_route_answers_as_the_fastapi_route(
        clean_db: str, app_client: AppClient, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting(monkeypatch)
    with app_client() as client:
        finished, pending = _jobs(client, clean_db, tmp_path)
        requests = _requests(finished, pending)
        lean = _answers(client, requests)
        assert calls == [finished, finished, finished, pending, "no-such-job", "été"]
        client.app.router.routes.remove(_lean_route(client))  # type: ignore[attr-defined]
        fastapi = _answers(client, requests)
        assert len(calls) == 6  # the second pass did not go through the lean route
    for (method, path), a, b in zip(requests, lean, fastapi, strict=True):
        assert a == b, f"{method} {path}"
    statuses = [a[0] for a in lean]
    assert statuses == [200, 200, 200, 200, 404, 404, 404, 405, 405, 405, 307]
    body = lean[0][2]
    assert b'"errors":[{"row":1' in body and b'"status":"completed_with_errors"' in body
    assert b'"request_id":"status-route-test"' in lean[4][2]


def test_the_lean_route_keeps_the_api_key_rate_limit_and_metrics(
        clean_db: str, app_client: AppClient, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting(monkeypatch)
    key = {"Authorization": "Bearer k-status-route"}
    with app_client(api_keys=["k-status-route"], rate_limit_per_minute=60,
                    rate_limit_burst=3) as client:
        _lean_route(client)
        assert client.get("/v1/imports/any").status_code == 401
        assert client.get("/v1/imports/any",
                          headers={"Authorization": "Bearer wrong"}).status_code == 403
        assert calls == []
        answers = [client.get("/v1/imports/no-such-job", headers=key) for _ in range(4)]
        assert [a.status_code for a in answers] == [404, 404, 404, 429]
        assert answers[3].json()["error"] == "rate_limited"
        assert calls == ["no-such-job"] * 3
        metrics = client.get("/metrics", headers=key).text
    # Labelled by the route template, as FastAPI's routes are (never the raw path).
    assert ('bulkport_http_requests_total{method="GET",route="/v1/imports/{job_id}",'
            'status="404"}') in metrics
    assert "no-such-job" not in metrics
