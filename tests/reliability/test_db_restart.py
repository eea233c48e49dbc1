"""PostgreSQL restarts in the middle of an import.

The test runs its own PostgreSQL (pgserver's bundled binaries, driven with
``pg_ctl``) so that stopping it disturbs no other test. While it is down,
``/health`` answers 503 and the API says the database is unavailable (503, not
500); the worker backs off and retries. Once it is back, everything recovers by
itself and the import ends exactly as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from bulkport import db
from bulkport.config import Settings
from tests.conftest import get_job
from tests.reliability.conftest import (
    BATCH_SIZE,
    Processes,
    all_terminal,
    outcome,
    reference,
    upload,
    wait_until,
)
from tests.reliability.data import users_csv

#: How long the database stays down (s): longer than the lease and a few backoff steps.
DOWN_SECONDS = 5


class PrivatePostgres:
    """A PostgreSQL of this test only, stopped and started with ``pg_ctl``."""

    def __init__(self, root: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver
            from pgserver import _commands

        self._pg_ctl = _commands.pg_ctl
        self.pgdata = root / "pg"
        self.server: Any = pgserver.get_server(self.pgdata, cleanup_mode="delete")
        self.url: str = self.server.get_uri()
        self.socket_dir = parse_qs(urlsplit(self.url).query)["host"][0]
        self.user = self.server.system_user  # pgserver runs PostgreSQL as another user as root

    def stop(self) -> None:
        self._pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self.user,
                     timeout=30)

    def start(self) -> None:
        self._pg_ctl(["-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}",
                      "-l", str(self.pgdata / "log"), "start"],
                     pgdata=self.pgdata, user=self.user, timeout=30)

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            self.start()  # cleanup stops a running server; make sure it is one
        self.server.cleanup()


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    root = Path(tempfile.mkdtemp(prefix="bulkport-restart-pg-"))
    os.chmod(root, 0o755)
    pg = PrivatePostgres(root)
    try:
        db.migrate(pg.url)
        yield pg
    finally:
        pg.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def _status(client: httpx.Client, path: str) -> int:
    try:
        return client.get(path, timeout=10).status_code
    except httpx.HTTPError:
        return -1


def test_database_restart_mid_import(procs: Processes, private_pg: PrivatePostgres,
                                     fast_settings: Settings, tmp_path: Path) -> None:
    path = users_csv(tmp_path / "users.csv", 40_000, seed=41)
    expected = reference(procs.url, fast_settings, [(path, "users")])
    url = private_pg.url

    srv = procs.server(url=url, workers=1).start()
    job_id = upload(srv.base, path).json()["job_id"]
    wait_until(lambda: get_job(url, job_id)["processed_records"] >= BATCH_SIZE, 60,
               "a committed batch")
    private_pg.stop()
    stopped = time.monotonic()
    try:
        with srv.client() as client:
            health = client.get("/health", timeout=10)
            assert health.status_code == 503
            assert health.json()["checks"]["database"] != "ok"
            status = client.get(f"/v1/imports/{job_id}", timeout=10)
            assert status.status_code == 503, status.text
            assert status.json()["error"] == "database_unavailable"
            time.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - stopped)))
            private_pg.start()
            # Recovers by itself: no restart of bulkport, just time.
            wait_until(lambda: _status(client, "/health") == 200, 30, "/health to recover")
            # Every pooled connection that died with the server is replaced, not served.
            for _ in range(12):
                assert _status(client, f"/v1/imports/{job_id}") == 200
        wait_until(lambda: all_terminal(url, [job_id]), 120, "the job to finish")
    except AssertionError:
        print(procs.logs())
        raise
    assert "retrying in" in procs.full_logs(), "the worker did not back off"
    outcome(url, [job_id]).assert_equal(expected)

    # A restart while the API is idle: its pooled connections are dead, and no request
    # may be the one that finds out.
    private_pg.stop()
    private_pg.start()
    with srv.client() as client:
        codes = [_status(client, f"/v1/imports/{job_id}") for _ in range(12)]
    assert codes == [200] * 12
