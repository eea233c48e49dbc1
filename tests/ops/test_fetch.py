"""Remote file_url downloads: redirects checked hop by hop, size and time limits.

Every target outside 127.0.0.1 is refused before a connection is made; the test
server only ever listens on 127.0.0.1 (allowed here through the allow-list).
"""

from __future__ import annotations

import http.server
import time
from pathlib import Path

import pytest

from bulkport.config import Settings
from bulkport.errors import FetchFailed
from bulkport.pipeline.fetch import UrlNotAllowed, check_url, fetch
from bulkport.storage import LocalStorage
from tests.conftest import FileServer

DATA = b"email,name,role\na@example.com,A,admin\n" * 100


def settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(data_dir=tmp_path / "data", **{"fetch_allow_list": ["127.0.0.1/32"], **kw})


def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "data" / "uploads")


def test_fetch_follows_allowed_redirects(file_server: FileServer, tmp_path: Path) -> None:
    file_server.body("/users.csv", DATA)
    file_server.redirect("/start", "/hop")
    file_server.redirect("/hop", f"{file_server.base}/users.csv", status=307)
    stored = fetch(f"{file_server.base}/start", storage(tmp_path), settings(tmp_path))
    assert (storage(tmp_path).path(stored.key).read_bytes(), stored.size) == (DATA, len(DATA))
    assert file_server.requests == ["/start", "/hop", "/users.csv"]


@pytest.mark.parametrize("target", [
    "http://127.0.0.2:{port}/users.csv",  # loopback, but outside the allow-list
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://10.0.0.5/users.csv",
    "http://[::1]:{port}/users.csv",
])
def test_redirect_to_a_private_address_is_refused(file_server: FileServer, tmp_path: Path,
                                                  target: str) -> None:
    file_server.redirect("/start", target.format(port=file_server.port))
    with pytest.raises(FetchFailed) as err:
        fetch(f"{file_server.base}/start", storage(tmp_path), settings(tmp_path))
    assert "refused" in err.value.message and "non-public address" in err.value.message
    assert file_server.requests == ["/start"]
    assert list((tmp_path / "data" / "uploads").iterdir()) == []


def test_loopback_is_refused_without_the_allow_list(file_server: FileServer,
                                                    tmp_path: Path) -> None:
    file_server.body("/users.csv", DATA)
    with pytest.raises(FetchFailed, match="non-public address"):
        fetch(f"{file_server.base}/users.csv", storage(tmp_path),
              settings(tmp_path, fetch_allow_list=[]))
    assert file_server.requests == []  # refused before connecting


def test_redirect_loops_give_up(file_server: FileServer, tmp_path: Path) -> None:
    file_server.redirect("/loop", "/loop")
    with pytest.raises(FetchFailed, match="redirects"):
        fetch(f"{file_server.base}/loop", storage(tmp_path), settings(tmp_path))
    assert len(file_server.requests) == 6


def test_announced_size_over_the_limit_is_refused_early(file_server: FileServer,
                                                        tmp_path: Path) -> None:
    file_server.body("/users.csv", DATA)
    with pytest.raises(FetchFailed, match="too large"):
        fetch(f"{file_server.base}/users.csv", storage(tmp_path),
              settings(tmp_path, max_upload_bytes=100))


def test_unannounced_size_is_counted(file_server: FileServer, tmp_path: Path) -> None:
    def send(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(DATA)

    file_server.routes["/stream"] = send
    with pytest.raises(FetchFailed, match="too large"):
        fetch(f"{file_server.base}/stream", storage(tmp_path),
              settings(tmp_path, max_upload_bytes=100))
    assert list((tmp_path / "data" / "uploads").iterdir()) == []


def test_total_time_limit(file_server: FileServer, tmp_path: Path) -> None:
    def dribble(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Connection", "close")
        h.end_headers()
        for _ in range(40):  # a byte every 50 ms: never idle long enough to time out
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(0.05)

    file_server.routes["/slow"] = dribble
    started = time.monotonic()
    with pytest.raises(FetchFailed, match="BULKPORT_FETCH_MAX_SECONDS"):
        fetch(f"{file_server.base}/slow", storage(tmp_path),
              settings(tmp_path, fetch_max_seconds=0.5))
    assert time.monotonic() - started < 1.9


def test_http_errors_become_a_clear_failure(file_server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(FetchFailed, match="HTTP 404"):
        fetch(f"{file_server.base}/missing.csv", storage(tmp_path), settings(tmp_path))


def test_check_url_resolves_names(tmp_path: Path) -> None:
    with pytest.raises(UrlNotAllowed, match=r"127\.0\.0\.1"):
        check_url("http://localhost:8000/x.csv", settings(tmp_path, fetch_allow_list=[]))
    for host in ("no-such-host.invalid", "a" * 300, "bad\x00host", "xn--a-.example"):
        with pytest.raises(UrlNotAllowed, match="could not be resolved"):
            check_url(f"http://{host}/x.csv", settings(tmp_path))
    assert check_url("http://127.0.0.1:1/x.csv", settings(tmp_path)) == "http://127.0.0.1:1/x.csv"
    assert check_url("http://10.0.0.1/x", settings(tmp_path, allow_private_urls=True))
