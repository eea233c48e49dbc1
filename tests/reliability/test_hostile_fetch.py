"""Hostile ``file_url`` sources: slow, lying, looping, credentialed, stalling servers.

Every server these tests talk to listens on 127.0.0.1 (reached through the
allow-list); addresses outside it are only ever given to the address check,
never connected to.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import ipaddress
import select
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from bulkport import db
from bulkport.config import Settings
from bulkport.jobs import service
from bulkport.jobs.status import JobKind
from bulkport.jobs.store import STORE, fingerprint
from bulkport.jobs.worker import Worker
from bulkport.pipeline.fetch import UrlNotAllowed, check_url, redact
from tests.conftest import FileServer, get_job, run_jobs
from tests.ops.conftest import AppClient
from tests.ops.conftest import app_client as app_client  # the fixture, used by name
from tests.reliability.conftest import Processes, wait_until

ALLOW_LOOPBACK = {"BULKPORT_FETCH_ALLOW_LIST": "127.0.0.1/32"}
USERS = b"email,name,role\n" + b"".join(
    f"user{i}@example.com,User {i},reader\n".encode() for i in range(20))


class Trickle:
    """A route that sends a CSV header, then one users row a second.

    Notes how many rows went out and whether the client hung up before the end
    (an EOF or reset on the connection while rows were still to come).
    """

    def __init__(self, rows: int = 40) -> None:
        self.rows = rows
        self.sent = 0
        self.hung_up = threading.Event()

    def __call__(self, h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/csv")
        h.send_header("Connection", "close")
        h.end_headers()
        try:
            h.wfile.write(b"email,name,role\n")
            h.wfile.flush()
            for i in range(self.rows):
                if _client_gone(h.connection, wait=1.0):
                    self.hung_up.set()
                    return
                h.wfile.write(f"slow{i}@example.com,Slow {i},reader\n".encode())
                h.wfile.flush()
                self.sent += 1
        except OSError:  # broken pipe, reset: the client went away
            self.hung_up.set()


def _client_gone(conn: socket.socket, wait: float) -> bool:
    """Wait up to ``wait`` s; True when the peer closed the connection meanwhile."""
    readable, _, _ = select.select([conn], [], [], wait)
    if not readable:
        return False
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def fetch_settings(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", lease_seconds=5, poll_interval_seconds=0.1,
                    **{"fetch_allow_list": ["127.0.0.1/32"], **kw})


def submit_url(url: str, file_url: str) -> str:
    """Create a file_url import job as the API would (the URL was checked there)."""
    values = {"resource": "users", "format": None, "mode": "insert", "dry_run": False,
              "file_key": None, "file_name": "x.csv", "file_size_bytes": None,
              "source_url": file_url, "idempotency_key": None, "request_id": None,
              "fingerprint": fingerprint(file_url=file_url)}
    with db.connect(url, autocommit=True) as c:
        job, _ = STORE.create(c, JobKind.IMPORT, values)
    return str(job["id"])


def user_count(url: str) -> int:
    with db.connect(url, autocommit=True) as c:
        row = c.execute("SELECT count(*) FROM users").fetchone()
    assert row is not None
    return int(row[0])


def uploads_left(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "data" / "uploads").glob("*"))


# --- stopping a download ------------------------------------------------------------------


def test_cancel_stops_a_download_in_progress(procs: Processes, clean_db: str,
                                             file_server: FileServer) -> None:
    trickle = Trickle(rows=40)
    file_server.routes["/slow.csv"] = trickle
    srv = procs.server(env=ALLOW_LOOPBACK).start()
    with srv.client() as client:
        made = client.post("/v1/imports", json={"resource": "users",
                                                "file_url": f"{file_server.base}/slow.csv"})
        assert made.status_code == 202, made.text
        job_id = made.json()["job_id"]
        wait_until(lambda: trickle.sent >= 1, 30, "the download to start")
        cancelled = client.post(f"/v1/imports/{job_id}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["processed_records"] == 0
    # The download notices within about a second and closes the connection...
    wait_until(trickle.hung_up.is_set, 15, "the worker to hang up on the slow server")
    assert trickle.sent < 25  # of 40
    # ...and nothing is committed afterwards.
    time.sleep(3)
    job = get_job(clean_db, job_id)
    assert (job["status"], job["processed_records"], job["checkpoint"]) == ("cancelled", 0, 0)
    assert user_count(clean_db) == 0
    assert f"import {job_id} stopped during the download" in srv.log.read_text()


@pytest.mark.parametrize("how", ["graceful_stop", "lease_lost"])
def test_a_download_stops_when_the_worker_must_let_go(clean_db: str, tmp_path: Path,
                                                      file_server: FileServer,
                                                      how: str) -> None:
    trickle = Trickle(rows=40)
    file_server.routes["/slow.csv"] = trickle
    job_id = submit_url(clean_db, f"{file_server.base}/slow.csv")
    worker = Worker(fetch_settings(tmp_path), clean_db, name="fetching-worker")
    thread = threading.Thread(target=worker.run_once, daemon=True)
    thread.start()
    wait_until(lambda: trickle.sent >= 1, 30, "the download to start")
    if how == "graceful_stop":
        worker.stopping.set()
    else:  # another worker takes the job over (as after an expired lease)
        with db.connect(clean_db, autocommit=True) as c:
            service.release(c, job_id, worker.name)
            assert STORE.claim(c, JobKind.IMPORT, "other-worker", 60) is not None
    thread.join(15)
    assert not thread.is_alive(), "the worker kept downloading"
    assert trickle.hung_up.wait(5)
    job = get_job(clean_db, job_id)
    if how == "graceful_stop":  # handed back for another worker to start over
        assert (job["status"], job["owner"]) == ("pending", None)
    else:
        assert (job["status"], job["owner"]) == ("processing", "other-worker")
    assert job["processed_records"] == 0 and job["file_key"] is None
    assert user_count(clean_db) == 0
    assert uploads_left(tmp_path) == []  # the partial download is gone


# --- the address check --------------------------------------------------------------------

EMBEDDED = {"loopback": "127.0.0.1", "private": "10.1.2.3",
            "private_192": "192.168.1.1", "link_local": "169.254.169.254"}
PUBLIC = "8.8.8.8"


def _forms(v4: str) -> dict[str, str]:
    """The IPv6 forms that carry an IPv4 address, each holding ``v4``."""
    n = int.from_bytes(socket.inet_aton(v4), "big")
    hi, lo = n >> 16, n & 0xFFFF
    inv = n ^ 0xFFFFFFFF
    return {
        "ipv4_mapped": f"::ffff:{v4}",
        "ipv4_mapped_hex": f"::ffff:{hi:x}:{lo:x}",
        "ipv4_compatible": f"::{v4}",
        "ipv4_translated": f"::ffff:0:{v4}",
        "nat64": f"64:ff9b::{hi:x}:{lo:x}",
        "nat64_local": f"64:ff9b:1::{hi:x}:{lo:x}",
        "6to4": f"2002:{hi:x}:{lo:x}::",
        "6to4_host": f"2002:{hi:x}:{lo:x}:1::1",
        "teredo": f"2001:0:4136:e378:8000:63bf:{inv >> 16:x}:{inv & 0xFFFF:x}",
    }


@pytest.mark.parametrize("form", list(_forms(PUBLIC)))
@pytest.mark.parametrize("kind", list(EMBEDDED))
def test_embedded_ipv4_is_checked_like_the_ipv4(tmp_path: Path, kind: str, form: str) -> None:
    address = _forms(EMBEDDED[kind])[form]
    with pytest.raises(UrlNotAllowed, match="non-public") as err:
        check_url(f"http://[{address}]/users.csv", Settings(data_dir=tmp_path / "data"))
    assert err.value.details["address"] == str(ipaddress.ip_address(address))


#: Forms whose prefix is refused whatever they carry: Teredo (a tunnel client, never a
#: file server) and the local-use NAT64 prefix (not globally reachable, RFC 8215).
REFUSED_PREFIXES = {"teredo", "nat64_local"}


@pytest.mark.parametrize("form", list(_forms(PUBLIC)))
def test_public_embedded_ipv4_passes_the_check(tmp_path: Path, form: str) -> None:
    url = f"http://[{_forms(PUBLIC)[form]}]/users.csv"
    settings = Settings(data_dir=tmp_path / "data")
    if form in REFUSED_PREFIXES:
        with pytest.raises(UrlNotAllowed):
            check_url(url, settings)
    else:
        assert check_url(url, settings) == url


def test_allow_list_still_opens_an_embedded_address(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", fetch_allow_list=["64:ff9b::/96"])
    assert check_url("http://[64:ff9b::7f00:1]/x.csv", settings)


# --- credentials in the URL ---------------------------------------------------------------

PASSWORD = "s3cretpw"


@pytest.mark.parametrize(("url", "shown"), [
    ("http://admin:s3cretpw@h:8080/x.csv", "http://***@h:8080/x.csv"),
    ("https://token@h/x.csv", "https://***@h/x.csv"),
    ("https://a@b:c@h/x.csv", "https://***@h/x.csv"),  # the last "@" ends the userinfo
    ("http:/admin:pw@h/x.csv", "http:/***@h/x.csv"),  # malformed, still hidden
    ("http://h/x.csv?mail=a@b#c@d", "http://h/x.csv?mail=a@b#c@d"),  # no userinfo
])
def test_redact_hides_the_userinfo(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_credentials_are_used_but_never_shown(procs: Processes, clean_db: str,
                                              file_server: FileServer) -> None:
    token = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    seen: list[str | None] = []  # Authorization headers the file server received
    seen_elsewhere: list[str | None] = []  # ...and those the other origin received

    def guard(received: list[str | None]) -> Any:
        def send(h: http.server.BaseHTTPRequestHandler) -> None:
            received.append(h.headers.get("Authorization"))
            if h.headers.get("Authorization") != f"Basic {token}":
                h.send_response(401)
                h.send_header("WWW-Authenticate", 'Basic realm="files"')
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            h.send_response(200)
            h.send_header("Content-Length", str(len(USERS)))
            h.end_headers()
            h.wfile.write(USERS)
        return send

    def broken(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(500)
        h.send_header("Content-Length", "0")
        h.end_headers()

    other = FileServer()  # another origin: credentials must not follow a redirect there
    other.thread.start()
    other.routes["/users.csv"] = guard(seen_elsewhere)
    try:
        file_server.routes["/users.csv"] = guard(seen)
        file_server.routes["/broken.csv"] = broken
        file_server.redirect("/moved.csv", "/users.csv")
        file_server.redirect("/away.csv", f"{other.base}/users.csv")
        creds = f"admin:{PASSWORD}@127.0.0.1:{file_server.port}"
        srv = procs.server(env=ALLOW_LOOPBACK).start()
        shown: list[str] = []
        with srv.client() as client:
            def post(url: str) -> httpx.Response:
                resp = client.post("/v1/imports", json={"resource": "users", "file_url": url,
                                                        "mode": "upsert"})
                shown.append(resp.text)
                return resp

            ids = {}
            for name, url in {"ok": f"http://{creds}/users.csv",
                              "redirected": f"http://{creds}/moved.csv",
                              "failing": f"http://{creds}/broken.csv",
                              "elsewhere": f"http://{creds}/away.csv",
                              "no_path": f"http://{creds}"}.items():
                resp = post(url)
                assert resp.status_code == 202, resp.text
                ids[name] = resp.json()["job_id"]
            refused = post(f"http://admin:{PASSWORD}@127.0.0.1:99999/x.csv")
            assert refused.status_code == 400, refused.text
            private = post(f"http://admin:{PASSWORD}@10.0.0.1/x.csv")
            assert private.status_code == 400, private.text
            jobs = {name: srv.wait_job(job_id) for name, job_id in ids.items()}
            for job_id in ids.values():
                for path in (f"/v1/imports/{job_id}", f"/v1/imports/{job_id}/errors",
                             f"/v1/imports/{job_id}/errors?format=csv"):
                    shown.append(client.get(path).text)
            shown.append(client.get("/v1/imports?limit=100").text)
    finally:
        other.httpd.shutdown()
        other.httpd.server_close()
    # The credentials were used (Basic auth) where they belong...
    assert jobs["ok"]["status"] == "completed", jobs["ok"]
    assert jobs["redirected"]["status"] == "completed", jobs["redirected"]
    assert f"Basic {token}" in seen
    # ...and not sent to another origin a redirect pointed at.
    assert jobs["elsewhere"]["status"] == "failed"
    assert "HTTP 401" in jobs["elsewhere"]["failure_reason"]
    assert seen_elsewhere == [None]
    assert jobs["failing"]["status"] == "failed"
    reason = jobs["failing"]["failure_reason"]
    assert "HTTP 500" in reason and f"http://***@127.0.0.1:{file_server.port}/broken.csv" in reason
    assert jobs["no_path"]["status"] == "failed"
    # Nothing shows the password: API answers, server logs, the job columns users see.
    logs = srv.log.read_text()
    assert "failure_reason" in logs and "HTTP Request" in logs  # the lines were logged
    for text in [*shown, logs]:
        assert PASSWORD not in text and token not in text
    for job_id in ids.values():
        row = get_job(clean_db, job_id)
        visible = {k: v for k, v in row.items() if k != "source_url"}
        assert PASSWORD not in orjson.dumps(visible, default=str).decode()


# --- redirects, sizes, time ---------------------------------------------------------------


def _redirect_to(location: str) -> Any:
    def send(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()
    return send


def _unannounced(size: int) -> Any:
    def send(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Connection", "close")
        h.end_headers()
        for _ in range(size // 1000):
            h.wfile.write(b"x" * 999 + b"\n")
    return send


def _announced_too_much(h: http.server.BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Content-Length", str(10 ** 12))
    h.end_headers()
    h.wfile.write(USERS)


def _stall(h: http.server.BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Content-Length", "100000")
    h.end_headers()
    h.wfile.write(USERS)
    h.wfile.flush()
    _client_gone(h.connection, wait=10)  # then silence, until the client gives up


def _dribble(h: http.server.BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Connection", "close")
    h.end_headers()
    with contextlib.suppress(OSError):
        h.wfile.write(b"email,name,role\n")
        for i in range(100):  # a row every 0.2 s: never idle long enough to time out
            h.wfile.write(f"d{i}@example.com,D,reader\n".encode())
            h.wfile.flush()
            time.sleep(0.2)


#: name -> (route, settings, words the failure_reason must contain)
HOSTILE: dict[str, tuple[Any, dict[str, Any], tuple[str, ...]]] = {
    "redirect_to_file": (_redirect_to("file:///etc/passwd"), {},
                         ("redirect to a file:// URL is not allowed: only http and https",)),
    "redirect_to_gopher": (_redirect_to("gopher://127.0.0.1:70/1"), {},
                           ("redirect to a gopher:// URL is not allowed: only http and https",)),
    "redirect_to_bad_ipv6": (_redirect_to("http://[::1/x.csv"), {},
                             ("redirect to an invalid URL", "Invalid IPv6 URL")),
    "redirect_to_bad_port": (_redirect_to("http://127.0.0.1:99999/x.csv"), {},
                             ("redirect to an invalid URL", "Port out of range")),
    "redirect_loop": (_redirect_to("/start"), {}, ("gave up after 5 redirects",)),
    "redirect_to_metadata": (_redirect_to("http://169.254.169.254/latest/meta-data/"), {},
                             ("refused to download", "169.254.169.254", "non-public")),
    "redirect_to_mapped_loopback": (_redirect_to("http://[::ffff:127.0.0.2]/x"), {},
                                    ("refused to download", "non-public")),
    "announced_too_large": (_announced_too_much, {},
                            ("too large", "announces 1000000000000 bytes")),
    "unannounced_too_large": (_unannounced(50_000), {"max_upload_bytes": 20_000},
                              ("too large", "20000 bytes")),
    "stalls": (_stall, {"fetch_timeout_seconds": 1.0},
               ("sent nothing for 1 s", "BULKPORT_FETCH_TIMEOUT_SECONDS")),
    "too_slow_overall": (_dribble, {"fetch_max_seconds": 1.0},
                         ("longer than 1 s", "BULKPORT_FETCH_MAX_SECONDS")),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_source_fails_the_job_with_a_reason(clean_db: str, tmp_path: Path,
                                                    file_server: FileServer,
                                                    case: str) -> None:
    route, overrides, words = HOSTILE[case]
    file_server.routes["/start"] = route
    job_id = submit_url(clean_db, f"{file_server.base}/start")
    started = time.monotonic()
    run_jobs(clean_db, fetch_settings(tmp_path, **overrides))
    job = get_job(clean_db, job_id)
    assert job["status"] == "failed", job
    reason = job["failure_reason"]
    assert "internal error" not in reason
    for word in words:
        assert word in reason, reason
    assert time.monotonic() - started < 15
    assert uploads_left(tmp_path) == []
    assert user_count(clean_db) == 0


# --- URLs refused when the job is created -------------------------------------------------

BAD_URLS = [
    "http://127.0.0.1:99999/x.csv",
    "http://127.0.0.1:-1/x.csv",
    "http://127.0.0.1:8a/x.csv",
    "http://[::1/x.csv",
    "http://[fe80::zz]/x.csv",
    "http://[v1.fe]/x.csv",
    "http://[::1]x/x.csv",
    "http://[::1%25eth0]/x.csv",
    "http://[::ffff:127.0.0.1]:99999/x.csv",
    "http:///x.csv",
    "http://:80/x.csv",
    "http://user@/x.csv",
    "http://exa mple.com/x.csv",
    "file:///etc/passwd",
    "gopher://127.0.0.1/",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_bad_url_is_a_400_when_the_job_is_created(app_client: AppClient, url: str) -> None:
    with app_client(allow_private_urls=True) as client:
        resp = client.post("/v1/imports", json={"resource": "users", "file_url": url})
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert set(body) == {"error", "message", "details", "request_id"}
    assert "file_url" in body["message"]
