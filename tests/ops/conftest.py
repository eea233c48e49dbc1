"""Fixtures of the operations tests: the app in-process with chosen settings, a file server."""

from __future__ import annotations

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
