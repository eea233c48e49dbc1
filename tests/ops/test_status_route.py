"""``GET /v1/imports/{id}`` is answered by the lean path, exactly as FastAPI's route did.

The lean path (bulkport.api.status_route.StatusFront) sits in front of the
app's own stack, where the FastAPI route of the same path stays for the
OpenAPI document. The tests send the same requests to the app twice, once as
it is and once with the front taken out (so that FastAPI's stack and route
answer them), and compare the answers: status, every header, the body bytes.
A fixed ``X-Request-ID`` makes the error bodies comparable. A counter on the
lean path's call of the shared answer shows that the first pass really went
through it.
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


def _front(client: TestClient) -> status_route.StatusFront:
    stack = client.app.middleware_stack  # type: ignore[attr-defined]
    assert isinstance(stack, status_route.StatusFront)
    return stack


def _without_front(client: TestClient) -> None:
    """FastAPI's own stack answers everything from now on."""
    client.app.middleware_stack = _front(client).app  # type: ignore[attr-defined]


def test_the_lean_route_answers_as_the_fastapi_route(
        clean_db: str, app_client: AppClient, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting(monkeypatch)
    with app_client() as client:
        finished, pending = _jobs(client, clean_db, tmp_path)
        requests = _requests(finished, pending)
        lean = _answers(client, requests)
        assert calls == [finished, finished, finished, pending, "no-such-job", "été"]
        _without_front(client)
        fastapi = _answers(client, requests)
        assert len(calls) == 6  # the second pass did not go through the lean path
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
        _front(client)
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


def test_the_lean_path_and_the_other_routes_share_one_rate_limit(
        clean_db: str, app_client: AppClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """One bucket per caller whichever chain answers: two lists (FastAPI's stack) and
    one status read (the lean path) spend the burst of 3, the next read is refused."""
    calls = _counting(monkeypatch)
    with app_client(rate_limit_per_minute=60, rate_limit_burst=3) as client:
        _front(client)
        codes = [client.get("/v1/imports").status_code for _ in range(2)]
        codes += [client.get("/v1/imports/no-such-job").status_code for _ in range(2)]
    assert codes == [200, 200, 404, 429]
    assert calls == ["no-such-job"]


def test_an_unexpected_error_is_the_same_500_on_both_paths(
        clean_db: str, app_client: AppClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(state: Any, job_id: str) -> Any:
        raise RuntimeError("a bug in the status read")

    monkeypatch.setattr(status_route, "import_status_response", broken)
    monkeypatch.setattr(imports, "import_status_response", broken)
    requests = [("GET", "/v1/imports/some-job")]
    with app_client() as client:
        lean = _answers(client, requests)
        _without_front(client)
        fastapi = _answers(client, requests)
    assert lean == fastapi
    assert lean[0][0] == 500 and b'"error":"internal_error"' in lean[0][2]
