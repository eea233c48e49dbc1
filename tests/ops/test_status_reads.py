"""The reads clients poll cost one round trip to PostgreSQL, and never a dead connection.

``GET /v1/imports/{id}`` used to take three round trips, each one a wait for
PostgreSQL on a busy machine: the pool's probe of the connection at checkout,
the job, then its first errors (bench/README.md, "Status reads"). Now the pool
probes only a connection that may be dead, and the job comes with its first
errors in one query (or without them, when the API holds them encoded and the
job has not changed since); the import list and export status lose the probe
too.
The round trips are counted with libpq's own protocol trace (``PQtrace``) of
every connection of the app's pools: a count that does not depend on timing,
so the test cannot flake on a busy machine.

Probing only a suspect connection must not hand out one that PostgreSQL
closed: the second test terminates every pooled backend and reads again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
from fastapi.testclient import TestClient
from psycopg_pool import ConnectionPool

from bulkport import db
from bulkport.config import Settings
from tests.conftest import run_jobs
from tests.ops.conftest import AppClient

#: Three bad emails among five users: the status carries error entries.
CSV = (b"email,name,role\n" + b"".join(b"bad-%d,User,reader\n" % i for i in range(3))
       + b"ok1@example.com,User,reader\nok2@example.com,User,reader\n")
#: Messages that end a round trip: a simple query, or the Sync of an extended one.
ROUND_TRIP_ENDS = {"Query", "Sync"}
#: psycopg's default: a statement is prepared on a connection at its 6th execution.
PREPARE_THRESHOLD = 5


def _pooled_connections(client: TestClient) -> list[Any]:
    """The libpq connections of every pool of the app (each pool holds exactly one)."""
    pgconns: list[Any] = []
    for name, pool in vars(client.app.state.bulkport).items():  # type: ignore[attr-defined]
        if isinstance(pool, ConnectionPool):
            assert pool.max_size == 1, name
            with pool.connection() as conn:
                pgconns.append(conn.pgconn)
    assert pgconns
    return pgconns


def round_trips(client: TestClient, tmp_path: Path, request: Callable[[], httpx.Response]
                ) -> int:
    """Round trips to PostgreSQL made by the pooled connections while ``request`` runs."""
    pgconns = _pooled_connections(client)
    traces = [tmp_path / f"trace-{i}-{time.monotonic_ns()}.txt" for i in range(len(pgconns))]
    fds = [os.open(t, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) for t in traces]
    for pgconn, fd in zip(pgconns, fds, strict=True):
        pgconn.trace(fd)
        pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
    try:
        resp = request()
    finally:
        for pgconn in pgconns:
            pgconn.untrace()  # flushes the trace; the connections stay in their pools
        for fd in fds:
            os.close(fd)
    assert resp.status_code == 200, resp.text
    count = 0
    for trace in traces:
        for line in trace.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[0] == "F" and fields[2] in ROUND_TRIP_ENDS:
                count += 1
    return count


@contextmanager
def client_with_jobs(app_client: AppClient, pg_url: str, tmp_path: Path, pool_size: int
                     ) -> Iterator[tuple[TestClient, str, str]]:
    """The app with ``pool_size`` connections per pool, a finished import with errors
    and a pending export."""
    with app_client(pool_min_size=pool_size, pool_max_size=pool_size) as client:
        resp = client.post("/v1/imports", data={"resource": "users"},
                           files={"file": ("u.csv", CSV, "text/csv")})
        assert resp.status_code == 202, resp.text
        import_id = resp.json()["job_id"]
        run_jobs(pg_url, Settings(data_dir=tmp_path / "data"))
        resp = client.post("/v1/exports", json={"resource": "users"})
        assert resp.status_code == 202, resp.text
        yield client, import_id, resp.json()["job_id"]


def test_polled_reads_take_one_round_trip(clean_db: str, app_client: AppClient,
                                          tmp_path: Path) -> None:
    with client_with_jobs(app_client, clean_db, tmp_path, pool_size=1) as (
            client, import_id, export_id):
        status = client.get(f"/v1/imports/{import_id}").json()
        assert status["status"] == "completed_with_errors"
        assert [e["row"] for e in status["errors"]] == [1, 2, 3]
        for path in (f"/v1/imports/{import_id}", "/v1/imports?limit=20",
                     f"/v1/exports/{export_id}"):
            # psycopg prepares a statement at its 6th run, a round trip of its own once
            # per connection: count after that.
            for _ in range(PREPARE_THRESHOLD + 1):
                assert client.get(path).status_code == 200
            counts = [round_trips(client, tmp_path, lambda p=path: client.get(p))
                      for _ in range(3)]
            assert counts == [1, 1, 1], path
        # The import status reads above were answered with the cached first errors
        # (api/first_errors.py): the cache keeps the query to one round trip too.
        cache = client.app.state.bulkport.first_errors  # type: ignore[attr-defined]
        held = cache.get(import_id)
        assert held is not None and held.error_records == 3


def test_reads_never_get_a_connection_the_server_closed(clean_db: str, app_client: AppClient,
                                                        tmp_path: Path) -> None:
    with client_with_jobs(app_client, clean_db, tmp_path, pool_size=2) as (
            client, import_id, export_id):
        paths = [f"/v1/imports/{import_id}", "/v1/imports", f"/v1/exports/{export_id}"]
        for path in paths * 4:  # fill both pools
            assert client.get(path).status_code == 200
        with db.connect(clean_db, autocommit=True) as conn:
            pids = [r[0] for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND backend_type = 'client backend'")]
            assert pids
            for pid in pids:
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            deadline = time.monotonic() + 30
            while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)",
                               (pids,)).fetchone() != (0,):
                assert time.monotonic() < deadline, "the backends did not exit"
                time.sleep(0.05)
        codes = [client.get(path).status_code for path in paths * 4]
        assert codes == [200] * len(codes)
