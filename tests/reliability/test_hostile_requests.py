"""Hostile requests (not files) through a real server: a clear 4xx, bounded memory, no 5xx.

Bodies of the wrong media type, JSON bodies past their limit, malformed
multipart envelopes (charsets that are not text encodings, over-long
boundaries), repeated form fields, and clients that hang up mid-upload. Each
is answered before the body is read where it can be, and none is counted as a
server error.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import ServerProcess
from tests.reliability.conftest import FAST_ENV, kill_group, wait_until

ERROR_KEYS = {"error", "message", "details", "request_id"}
GOOD_CSV = b"email,name,role\nh@example.com,H,admin\n"
#: Body sent with a wrong media type: the API must not hold it (bytes).
BIG_BODY_BYTES = 200 * 1024 * 1024
#: Growth of the API process's resident memory allowed while such a body streams in.
MAX_RSS_GROWTH_BYTES = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def srv(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(pg_url, tmp_path_factory.mktemp("hostile-requests") / "data",
                           workers=1, env=FAST_ENV)
    try:
        yield server.start()
    finally:
        server.stop()
        kill_group(server.proc)


@pytest.fixture
def http(srv: ServerProcess) -> Iterator[httpx.Client]:
    with srv.client() as client:
        yield client


def assert_error(resp: httpx.Response, status: int, code: str, mentions: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body.keys() == ERROR_KEYS
    assert body["error"] == code, body
    assert mentions in body["message"], body["message"]


def multipart(boundary: str, *parts: tuple[str, str | None, bytes]) -> bytes:
    out = b""
    for name, filename, value in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"'
                                                     if filename else "")
        out += (f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
                + value + b"\r\n")
    return out + f"--{boundary}--\r\n".encode()


# --- media types: refused before the body is read ------------------------------------------


@pytest.mark.parametrize(("path", "ctype"), [
    ("/v1/exports", "text/plain"),
    ("/v1/exports", "application/jsonx"),
    ("/v1/exports", "application/x-www-form-urlencoded"),
    ("/v1/exports", None),
    ("/v1/imports", "application/jsonx"),
    ("/v1/imports", "application/json-patch+json"),
    ("/v1/imports", "text/csv"),
])
def test_a_body_of_another_media_type_is_a_415(http: httpx.Client, path: str,
                                               ctype: str | None) -> None:
    body = b'{"resource": "users", "file_url": "https://example.com/u.csv"}'
    resp = http.post(path, content=body, headers={"Content-Type": ctype} if ctype else {})
    assert_error(resp, 415, "unsupported_media_type", "application/json")


def test_a_large_body_of_another_media_type_is_never_held(srv: ServerProcess) -> None:
    """``head -c 200M /dev/zero | curl -H 'Content-Type: text/plain' --data-binary @-``."""
    assert srv.proc is not None
    api = psutil.Process(srv.proc.pid)
    before = api.memory_info().rss
    peak = before
    chunk = bytes(1024 * 1024)

    def body() -> Iterator[bytes]:
        nonlocal peak
        for _ in range(BIG_BODY_BYTES // len(chunk)):
            peak = max(peak, api.memory_info().rss)
            yield chunk

    for path in ("/v1/exports", "/v1/imports"):
        try:
            resp = httpx.post(srv.base + path, content=body(), timeout=120,
                              headers={"Content-Type": "text/plain",
                                       "Content-Length": str(BIG_BODY_BYTES)})
        except httpx.TransportError:
            continue  # the server answered and closed before the body was all sent
        assert resp.status_code == 415, resp.text[:300]
    assert peak - before < MAX_RSS_GROWTH_BYTES, f"the API grew by {(peak - before) >> 20} MiB"


@pytest.mark.parametrize("path", ["/v1/exports", "/v1/imports"])
def test_a_json_body_past_its_limit_is_a_413(http: httpx.Client, path: str) -> None:
    body = b'{"resource": "users", "pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    resp = http.post(path, content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 413, resp.text[:300]
    assert resp.json()["error"] == "payload_too_large"


def test_json_with_parameters_and_any_case_is_read(http: httpx.Client) -> None:
    resp = http.post("/v1/exports", content=b'{"resource": "users"}',
                     headers={"Content-Type": "Application/JSON; charset=utf-8"})
    assert resp.status_code == 202, resp.text


# --- multipart envelopes -------------------------------------------------------------------


@pytest.mark.parametrize("params", [
    "boundary=X; charset=base64",
    "boundary=X; charset=rot13",
    "boundary=X; charset=hex",
    "boundary=X; charset=zlib",
    "boundary=X; charset=idna",
    "boundary=X; charset=undefined",
    "boundary=X; charset=no-such-charset",
    "boundary=" + "X" * 5000,
    "boundary=" + "X" * 71,
])
def test_a_malformed_multipart_envelope_is_a_400(http: httpx.Client, params: str) -> None:
    boundary = params.split(";")[0].removeprefix("boundary=")
    body = multipart(boundary, ("resource", None, b"users"), ("file", "u.csv", GOOD_CSV))
    resp = http.post("/v1/imports", content=body,
                     headers={"Content-Type": f"multipart/form-data; {params}"})
    assert_error(resp, 400, "bad_request", "multipart")


def test_a_text_charset_is_still_accepted(http: httpx.Client) -> None:
    body = multipart("X", ("resource", None, b"users"), ("file", "u.csv", GOOD_CSV))
    resp = http.post("/v1/imports", content=body,
                     headers={"Content-Type": "multipart/form-data; boundary=X; charset=latin-1"})
    assert resp.status_code == 202, resp.text


@pytest.mark.parametrize(("field", "first", "second"), [
    ("resource", b"articles", b"users"),
    ("format", b"ndjson", b"csv"),
    ("mode", b"upsert", b"insert"),
    ("dry_run", b"true", b"false"),
])
def test_a_form_field_sent_twice_is_a_400(http: httpx.Client, srv: ServerProcess, field: str,
                                          first: bytes, second: bytes) -> None:
    parts = [(field, None, first), (field, None, second)]
    if field != "resource":
        parts.append(("resource", None, b"users"))
    body = multipart("B", *parts, ("file", "u.csv", GOOD_CSV))
    resp = http.post("/v1/imports", content=body,
                     headers={"Content-Type": "multipart/form-data; boundary=B"})
    assert_error(resp, 400, "bad_request", f"'{field}' is given twice")
    uploads = srv.args[srv.args.index("--data-dir") + 1]
    assert not any(p.name.endswith(".part") for p in (Path(uploads) / "uploads").iterdir())


# --- clients that hang up ------------------------------------------------------------------


def _metric(http: httpx.Client, status: int) -> float:
    text = http.get("/metrics").text
    pattern = (r'^bulkport_http_requests_total\{[^}]*route="/v1/imports"[^}]*'
               rf'status="{status}"[^}}]*\}} ([0-9.e+]+)$')
    return sum(float(v) for v in re.findall(pattern, text, re.M))


def test_a_client_aborting_an_upload_is_a_499_not_a_500(srv: ServerProcess,
                                                        http: httpx.Client) -> None:
    mark = srv.log.stat().st_size
    before_499, before_500 = _metric(http, 499), _metric(http, 500)
    head = multipart("B", ("resource", None, b"users"))[:-len(b"--B--\r\n")]
    head += b'--B\r\nContent-Disposition: form-data; name="file"; filename="u.csv"\r\n\r\n'
    announced = 50 * 1024 * 1024
    port = int(srv.base.rsplit(":", 1)[1])
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST /v1/imports HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: multipart/form-data; boundary=B\r\n"
                         + f"Content-Length: {announced}\r\n\r\n".encode() + head
                         + GOOD_CSV * 20_000)
            time.sleep(0.3)  # the upload is under way, then the client is gone
    wait_until(lambda: _metric(http, 499) >= before_499 + 3, 15, "three 499s counted")
    assert _metric(http, 500) == before_500
    with srv.log.open("rb") as f:
        f.seek(mark)
        log = f.read().decode(errors="replace")
    assert "unhandled error" not in log and "Traceback" not in log, log[-3000:]
    assert '"status": 499' in log or '"status":499' in log or " 499" in log, log[-3000:]
    uploads = Path(srv.args[srv.args.index("--data-dir") + 1]) / "uploads"
    wait_until(lambda: not any(p.name.endswith(".part") for p in uploads.iterdir()), 10,
               "the partial uploads removed")
