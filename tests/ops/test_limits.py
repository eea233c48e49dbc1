"""Hostile input at the API: oversized bodies (413), refused file_url targets, /health (503)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ops.conftest import AppClient

LIMIT = 4096
CSV = b"email,name,role\n" + b"".join(b"u%d@example.com,User,reader\n" % i for i in range(400))


def stored_files(tmp_path: Path) -> list[Path]:
    uploads = tmp_path / "data" / "uploads"
    return sorted(uploads.iterdir()) if uploads.exists() else []


def multipart(content: bytes, boundary: str = "b0undary") -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"resource\"\r\n\r\nusers\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"u.csv\"\r\nContent-Type: text/csv\r\n\r\n").encode() + content + \
        f"\r\n--{boundary}--\r\n".encode()


def test_upload_over_the_limit_is_413_by_content_length(app_client: AppClient,
                                                       tmp_path: Path) -> None:
    big = CSV * 30  # well over LIMIT + the multipart allowance
    with app_client(max_upload_bytes=LIMIT) as client:
        resp = client.post("/v1/imports", data={"resource": "users"},
                           files={"file": ("u.csv", big, "text/csv")})
    assert resp.status_code == 413
    body = resp.json()
    assert body["error"] == "payload_too_large"
    assert str(LIMIT) in body["message"] and "BULKPORT_MAX_UPLOAD_BYTES" in body["message"]
    assert stored_files(tmp_path) == []


def test_chunked_upload_is_counted_while_streaming(app_client: AppClient,
                                                   tmp_path: Path) -> None:
    body = multipart(CSV * 30)
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count
        for i in range(0, len(body), 8192):
            sent.append(i)
            yield body[i:i + 8192]

    with app_client(max_upload_bytes=LIMIT) as client:
        resp = client.post("/v1/imports", content=chunks(),
                           headers={"Content-Type": "multipart/form-data; boundary=b0undary"})
    assert resp.status_code == 413, resp.text
    assert resp.json()["error"] == "payload_too_large"
    assert stored_files(tmp_path) == []


def test_file_within_the_limit_but_body_envelope_counts(app_client: AppClient,
                                                        tmp_path: Path) -> None:
    # A file one byte over the limit is refused even though the body fits the allowance.
    with app_client(max_upload_bytes=len(CSV) - 1) as client:
        resp = client.post("/v1/imports", data={"resource": "users"},
                           files={"file": ("u.csv", CSV, "text/csv")})
        assert resp.status_code == 413
        assert stored_files(tmp_path) == []
    with app_client(max_upload_bytes=len(CSV)) as client:
        resp = client.post("/v1/imports", data={"resource": "users"},
                           files={"file": ("u.csv", CSV, "text/csv")})
        assert resp.status_code == 202, resp.text


def test_every_413_closes_the_connection(app_client: AppClient) -> None:
    """A 413 from the stored file's own count (the body still fits the multipart
    allowance) closes the connection like the body limit's: the rest of the body is
    never read, so the connection cannot carry another request."""
    with app_client(max_upload_bytes=len(CSV) - 1) as client:
        resp = client.post("/v1/imports", data={"resource": "users"},
                           files={"file": ("u.csv", CSV, "text/csv")})
    assert resp.status_code == 413
    assert "file is larger than the limit" in resp.json()["message"]
    assert resp.headers.get("connection") == "close"


def test_large_json_body_is_413(app_client: AppClient) -> None:
    with app_client() as client:
        resp = client.post("/v1/imports", content=b'{"resource": "' + b"x" * 2_000_000 + b'"}',
                           headers={"Content-Type": "application/json"})
    assert resp.status_code == 413
    assert "multipart/form-data" in resp.json()["message"]


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/users.csv",
    "http://localhost/users.csv",
    "http://10.1.2.3/users.csv",
    "http://192.168.0.10/users.csv",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/users.csv",
    "http://[::ffff:127.0.0.1]/users.csv",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://2130706433/users.csv",  # 127.0.0.1 written as a number
    "http://0.0.0.0/users.csv",
    "http://100.64.0.1/users.csv",  # carrier-grade NAT
])
def test_file_url_to_non_public_addresses_is_refused(app_client: AppClient, url: str) -> None:
    with app_client() as client:
        resp = client.post("/v1/imports", json={"resource": "users", "file_url": url})
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["error"] == "url_not_allowed"
    assert "BULKPORT_FETCH_ALLOW_LIST" in body["message"]
    assert body["details"]["address"]


@pytest.mark.parametrize("url", ["ftp://example.com/u.csv", "file:///etc/passwd",
                                 "/relative/u.csv", "http://host:notaport/u.csv"])
def test_file_url_must_be_absolute_http(app_client: AppClient, url: str) -> None:
    with app_client() as client:
        resp = client.post("/v1/imports", json={"resource": "users", "file_url": url})
    assert resp.status_code == 400
    assert resp.json()["error"] == "bad_request"
    assert "http" in resp.json()["message"]


def test_private_urls_can_be_allowed(app_client: AppClient, clean_db: str) -> None:
    body = {"resource": "users", "file_url": "http://127.0.0.1:9/users.csv"}
    with app_client(allow_private_urls=True) as client:
        assert client.post("/v1/imports", json=body).status_code == 202
    with app_client(fetch_allow_list=["127.0.0.0/8"]) as client:
        assert client.post("/v1/imports", json={**body, "mode": "upsert"}).status_code == 202
    with app_client(fetch_allow_list=["localhost"]) as client:
        resp = client.post("/v1/imports",
                           json={**body, "file_url": "http://localhost:9/users.csv"})
        assert resp.status_code == 202
        assert client.post("/v1/imports", json=body).status_code == 400  # name, not address


def test_health_names_the_failing_check(app_client: AppClient) -> None:
    with app_client() as client:
        ok = client.get("/health")
        assert ok.status_code == 200
        assert ok.json() == {"status": "healthy",
                             "checks": {"database": "ok", "disk_space": "ok"}}
    with app_client(min_free_disk_bytes=1 << 60) as client:
        resp = client.get("/health")
        assert resp.status_code == 503
        body = resp.json()
        assert body["status"] == "unhealthy" and body["failing"] == ["disk_space"]
        assert body["checks"]["database"] == "ok"
        assert body["checks"]["disk_space"].startswith("failing:")
    with app_client() as client:
        client.app.state.bulkport.pool.close()  # type: ignore[attr-defined]
        resp = client.get("/health")
        assert resp.status_code == 503
        assert resp.json()["failing"] == ["database"]


def test_body_limit_stops_reading_at_the_limit() -> None:
    """The middleware answers 413 after the chunk that crosses the limit, not at the end."""
    import asyncio

    from starlette.requests import Request

    from bulkport.api.bodylimit import BodyLimitMiddleware

    pulled: list[int] = []

    async def receive() -> dict[str, object]:
        pulled.append(1)
        return {"type": "http.request", "body": b"x" * 1024, "more_body": len(pulled) < 1000}

    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        await Request(scope, receive).body()  # reads until the end (or an error)

    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/imports", "headers": [
        (b"content-type", b"application/octet-stream")], "query_string": b""}
    middleware = BodyLimitMiddleware(app, max_upload_bytes=1)  # + the multipart allowance
    asyncio.run(middleware(scope, receive, send))  # type: ignore[arg-type]
    assert sent[0]["status"] == 413
    assert len(pulled) == 64 + 1  # 64 KiB allowance + 1 byte: refused at the 65th chunk


# --- streaming multipart ----------------------------------------------------------------


def post_multipart(client, body: bytes):  # type: ignore[no-untyped-def]
    return client.post("/v1/imports", content=body,
                       headers={"Content-Type": "multipart/form-data; boundary=b0undary"})


def part(name: str, value: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--b0undary\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"


END = b"--b0undary--\r\n"


def test_upload_streams_to_storage_with_fields_in_any_order(app_client: AppClient,
                                                            tmp_path: Path,
                                                            clean_db: str) -> None:
    body = part("file", CSV, "users.csv") + part("resource", b"users") + \
        part("mode", b"upsert") + END
    with app_client() as client:
        resp = post_multipart(client, body)
    assert resp.status_code == 202, resp.text
    job = resp.json()
    assert (job["resource"], job["mode"], job["file_name"]) == ("users", "upsert", "users.csv")
    assert job["file_size_bytes"] == len(CSV)
    (stored,) = stored_files(tmp_path)
    assert stored.read_bytes() == CSV


@pytest.mark.parametrize(("body", "message"), [
    (part("resource", b"users") + END, "'file' part"),
    (part("file", CSV, "a.csv") + part("other", CSV, "b.csv") + END, "too many files"),
    (part("resource", b"users") + part("file", CSV, "a.csv"), "cut short"),  # no end
    (part("resource", b"x" * 70_000) + part("file", CSV, "a.csv") + END, "longer than"),
    (b"".join(part(f"f{i}", b"1") for i in range(11)) + part("file", CSV, "a.csv") + END,
     "too many form fields"),
    (part("file", CSV, "a.csv") + part("resource", b"posts") + END, "resource"),
    (b"garbage without any boundary", "malformed"),
])
def test_bad_multipart_is_400_and_stores_nothing(app_client: AppClient, tmp_path: Path,
                                                 body: bytes, message: str) -> None:
    with app_client() as client:
        resp = post_multipart(client, body)
    assert resp.status_code == 400, resp.text
    assert message in resp.json()["message"]
    assert stored_files(tmp_path) == []
