"""The command-line client run as a real process against real server processes.

One server of each kind serves the whole package. ``srv`` requires an API key
and commits 500 records per batch, so an import of users_huge.csv lasts long
enough for a terminal to show its progress; ``idle`` has no workers (on a
database of its own), so its jobs stay ``pending``.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import ServerProcess, empty_tables
from tests.e2e.test_imports_http import _server_on_own_database

API_KEY = "cli-test-key-0123456789"
HUGE_CODES = {"invalid_email_format": 201, "invalid_role": 167, "duplicate_email": 33}


@pytest.fixture(scope="package")
def srv(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(pg_url, tmp_path_factory.mktemp("cli") / "data",
                           env={"BULKPORT_API_KEYS": API_KEY, "BULKPORT_BATCH_SIZE": "500"})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package")
def idle(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with _server_on_own_database(pg_url, "bulkport_cli_idle",
                                 tmp_path_factory.mktemp("cli-idle") / "data", 0, {}) as server:
        yield server


@pytest.fixture
def sql(pg_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection to the module server's database, on emptied tables."""
    with psycopg.connect(pg_url, autocommit=True) as c:
        empty_tables(c)
        yield c


def cli_env(server: ServerProcess | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKPORT_")}
    if server is not None:
        env["BULKPORT_URL"] = server.base
    env["BULKPORT_API_KEY"] = API_KEY
    env.update(extra)
    return env


def bulkport(*args: str, env: dict[str, str], timeout: float = 120
             ) -> subprocess.CompletedProcess[str]:
    """``python -m bulkport ARGS`` as a process with pipes (not a terminal)."""
    return subprocess.run([sys.executable, "-m", "bulkport", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def clean_users(path: Path, n: int, bad_roles: int = 0) -> Path:
    """A users CSV of ``n`` valid records, the last ``bad_roles`` of them with a bad role."""
    tag = uuid.uuid4().hex[:8]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "email", "name", "role", "active", "created_at", "updated_at"])
        for i in range(n):
            role = "wizard" if i >= n - bad_roles else "reader"
            w.writerow([str(uuid.uuid4()), f"u{i}.{tag}@example.com", f"User {i}", role,
                        "true", "2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z"])
    return path
