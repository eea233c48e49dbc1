"""API keys, idempotency scoped to the key, and rate limiting (the app in-process)."""

from __future__ import annotations

import uuid

from bulkport.api.ratelimit import TokenBuckets
from bulkport.api.security import ApiKeys, key_id
from bulkport.config import Settings
from tests.ops.conftest import AppClient

KEYS = ["key-alpha-0123456789", "key-beta-9876543210"]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_error_shape(body: dict[str, object], code: str) -> None:
    assert set(body) == {"error", "message", "details", "request_id"}
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert body["request_id"]


def upload(client, key: str | None, content: bytes, idem: str):  # type: ignore[no-untyped-def]
    headers = {"Idempotency-Key": idem, **(bearer(key) if key else {})}
    return client.post("/v1/imports", headers=headers, data={"resource": "users"},
                       files={"file": ("u.csv", content, "text/csv")})


def test_settings_accept_comma_separated_or_json_keys(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("BULKPORT_API_KEYS", " a1 , b2,")
    assert Settings().api_keys == ["a1", "b2"]
    monkeypatch.setenv("BULKPORT_API_KEYS", '["a1", "b,2"]')
    assert Settings().api_keys == ["a1", "b,2"]
    assert "a1" not in repr(Settings())


def test_without_keys_the_api_is_open(app_client: AppClient) -> None:
    with app_client() as client:
        assert client.get("/v1/imports").status_code == 200


def test_keys_guard_every_v1_route(app_client: AppClient) -> None:
    with app_client(api_keys=KEYS) as client:
        for method, path in [("GET", "/v1/imports"), ("POST", "/v1/imports"),
                             ("GET", f"/v1/imports/{uuid.uuid4()}"),
                             ("GET", "/v1/nothing-here")]:
            resp = client.request(method, path)
            assert resp.status_code == 401, (method, path)
            assert_error_shape(resp.json(), "unauthorized")
            assert resp.headers["www-authenticate"].startswith("Bearer")
            assert resp.headers["x-request-id"] == resp.json()["request_id"]
        resp = client.get("/v1/imports", headers={"Authorization": "Basic dXNlcjpwYXNz"})
        assert resp.status_code == 401
        resp = client.get("/v1/imports", headers=bearer("not-a-key"))
        assert resp.status_code == 403
        assert_error_shape(resp.json(), "forbidden")
        for key in KEYS:
            assert client.get("/v1/imports", headers=bearer(key)).status_code == 200
        # Operations stay open by default.
        assert client.get("/health").status_code == 200
        assert client.get("/metrics").status_code == 200


def test_metrics_and_health_can_require_a_key(app_client: AppClient) -> None:
    with app_client(api_keys=KEYS, metrics_require_key=True, health_require_key=True) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/health").status_code == 401
        assert client.get("/metrics", headers=bearer(KEYS[0])).status_code == 200
        assert client.get("/health", headers=bearer(KEYS[0])).status_code == 200


def test_openapi_declares_bearer_auth(app_client: AppClient) -> None:
    with app_client() as client:
        doc = client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert doc["paths"]["/v1/imports"]["post"]["security"] == [{"apiKey": []}]
    assert {"401", "403", "429"} <= set(doc["paths"]["/v1/imports/{job_id}"]["get"]["responses"])
    assert "security" not in doc["paths"]["/health"]["get"]


def test_idempotency_keys_are_scoped_to_the_api_key(app_client: AppClient, clean_db: str
                                                    ) -> None:
    idem = f"idem-{uuid.uuid4()}"
    content = b"email,name,role\na@example.com,A,admin\n"
    with app_client(api_keys=KEYS) as client:
        first = upload(client, KEYS[0], content, idem)
        assert first.status_code == 202, first.text
        # The same Idempotency-Key under another API key is another request.
        other = upload(client, KEYS[1], content + b"b@example.com,B,admin\n", idem)
        assert other.status_code == 202, other.text
        assert other.json()["job_id"] != first.json()["job_id"]
        replay = upload(client, KEYS[0], content, idem)
        assert (replay.status_code, replay.json()["job_id"]) == (200, first.json()["job_id"])
        conflict = upload(client, KEYS[1], content, idem)
        assert conflict.status_code == 409
        assert conflict.json()["details"]["job_id"] == other.json()["job_id"]


def test_export_idempotency_keys_are_scoped_too(app_client: AppClient, clean_db: str) -> None:
    idem = {"Idempotency-Key": f"exp-{uuid.uuid4()}"}
    body = {"resource": "users", "format": "csv"}
    with app_client(api_keys=KEYS) as client:
        first = client.post("/v1/exports", json=body, headers={**idem, **bearer(KEYS[0])})
        other = client.post("/v1/exports", json=body, headers={**idem, **bearer(KEYS[1])})
        replay = client.post("/v1/exports", json=body, headers={**idem, **bearer(KEYS[0])})
    assert (first.status_code, other.status_code, replay.status_code) == (202, 202, 200)
    assert other.json()["job_id"] != first.json()["job_id"] == replay.json()["job_id"]


def test_key_ids_are_stable_and_reveal_nothing() -> None:
    keys = ApiKeys(KEYS)
    assert keys.identify(KEYS[0]) == key_id(KEYS[0])
    assert len(key_id(KEYS[0])) == 16 and KEYS[0] not in key_id(KEYS[0])
    assert keys.identify("nope") is None
    assert not ApiKeys([]).enabled


def test_token_bucket_refills_at_the_configured_rate() -> None:
    buckets = TokenBuckets(per_minute=60, burst=2)  # one token a second
    assert buckets.take("a", now=0.0) == 0
    assert buckets.take("a", now=0.0) == 0
    assert buckets.take("a", now=0.0) == 1.0
    assert buckets.take("b", now=0.0) == 0  # callers do not share a bucket
    assert buckets.take("a", now=0.5) == 0.5
    assert buckets.take("a", now=1.0) == 0


def test_rate_limit_answers_429_with_retry_after(app_client: AppClient) -> None:
    with app_client(rate_limit_per_minute=6, rate_limit_burst=2) as client:
        assert client.get("/v1/imports").status_code == 200
        assert client.get("/v1/imports").status_code == 200
        resp = client.get("/v1/imports")
        assert resp.status_code == 429
        assert_error_shape(resp.json(), "rate_limited")
        assert 1 <= int(resp.headers["retry-after"]) <= 10
        assert resp.json()["details"]["limit_per_minute"] == 6
        # Operations endpoints are not limited.
        assert client.get("/health").status_code == 200


def test_rate_limit_is_per_api_key(app_client: AppClient) -> None:
    with app_client(api_keys=KEYS, rate_limit_per_minute=6, rate_limit_burst=1) as client:
        assert client.get("/v1/imports", headers=bearer(KEYS[0])).status_code == 200
        assert client.get("/v1/imports", headers=bearer(KEYS[0])).status_code == 429
        assert client.get("/v1/imports", headers=bearer(KEYS[1])).status_code == 200
        # Wrong keys are counted by address: guessing is limited too.
        assert client.get("/v1/imports", headers=bearer("guess-1")).status_code == 403
        assert client.get("/v1/imports", headers=bearer("guess-2")).status_code == 429


def test_rate_limit_can_be_disabled(app_client: AppClient) -> None:
    with app_client(rate_limit_per_minute=0) as client:
        assert all(client.get("/v1/imports").status_code == 200 for _ in range(30))
