"""Fixtures of the operations tests: the app in-process with chosen settings, a file server."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bulkport import db
from bulkport.api.app import create_app
from bulkport.config import Settings

AppClient = Callable[..., AbstractContextManager[TestClient]]


@pytest.fixture
def app_client(pg_url: str, tmp_path: Path) -> AppClient:
    """``app_client(**settings)``: a TestClient of the app (no workers) with those settings."""

    @contextmanager
    def make(**overrides: Any) -> Iterator[TestClient]:
        settings = Settings(data_dir=tmp_path / "data", **overrides)
        # The rate limit's buckets live in the database: each app starts with full ones.
        with db.connect(pg_url, autocommit=True) as c:
            c.execute("TRUNCATE rate_limit_buckets")
        with TestClient(create_app(settings, pg_url), raise_server_exceptions=False) as client:
            yield client

    return make


class FileServer:
    """A loopback HTTP server with canned routes; remembers every request it received."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[http.server.BaseHTTPRequestHandler], None]] = {}
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                route = outer.routes.get(self.path.split("?")[0])
                if route is None:
                    self.send_error(404)
                else:
                    route(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)

    def body(self, path: str, data: bytes, content_type: str = "text/csv") -> None:
        def send(h: http.server.BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Type", content_type)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        self.routes[path] = send

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        def send(h: http.server.BaseHTTPRequestHandler) -> None:
            h.send_response(status)
            h.send_header("Location", location)
            h.send_header("Content-Length", "0")
            h.end_headers()
        self.routes[path] = send


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    server = FileServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
