"""Split streaming exports: id ranges read by several connections in one snapshot.

Tables here are small, so the split thresholds are lowered: a few pages make
a range, and each export is cut into dozens of ranges dealt out to the lanes.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from bulkport import db
from bulkport.pipeline.export import lanes
from bulkport.pipeline.export.bridge import CopyStream
from bulkport.pipeline.export_spec import parse_spec
from bulkport.sql.exporting import SESSION_OPTIONS
from tests.export_data import export_bytes

USERS = 6000
APP = "export-lanes-test"


@pytest.fixture
def many_users(clean_db: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(lanes, "SPLIT_MIN_PAGES", 1)
    monkeypatch.setattr(lanes, "PAGES_PER_RANGE", 2)
    with db.connect(clean_db, autocommit=True) as c:
        # Random ids (physical order is not id order), names that need CSV quoting,
        # formula neutralisation and unicode, fractional and whole timestamps.
        c.execute(f"""
            INSERT INTO users (id, email, name, role, active, created_at, updated_at)
            SELECT md5(i::text), 'u' || i || '@example.com',
                   CASE i % 4 WHEN 0 THEN 'Name, "' || i || '"' WHEN 1 THEN '=SUM(' || i || ')'
                               WHEN 2 THEN 'Zoë ' || i ELSE 'line' || chr(10) || i END,
                   (ARRAY['admin', 'author', 'reader'])[1 + i % 3], i % 5 <> 0,
                   timestamptz '2020-01-01' + i * interval '1.25 seconds',
                   timestamptz '2021-01-01' + i * interval '1 hour'
            FROM generate_series(1, {USERS}) i""")
        c.execute("ANALYZE users")
    return clean_db


def _pool(url: str, size: int) -> ConnectionPool[Any]:
    pool: ConnectionPool[Any] = ConnectionPool(
        url, min_size=size, max_size=size, open=False,
        kwargs={"options": SESSION_OPTIONS, "autocommit": True, "application_name": APP})
    pool.open(wait=True)
    return pool


class Pools:
    def __init__(self, url: str, helpers: int) -> None:
        self.main = _pool(url, 1)
        self.lanes = _pool(url, helpers)
        self.helpers = helpers

    def stream(self, spec: Any, *, wait: float = 5.0, **kwargs: Any) -> CopyStream:
        extra: list[AbstractContextManager[psycopg.Connection[Any]]] = [
            self.lanes.connection(timeout=wait) for _ in range(self.helpers)]
        return CopyStream(self.main.connection(), spec, helpers=extra, **kwargs)

    def all_back(self) -> bool:
        return (self.main.get_stats()["pool_available"] == 1
                and self.lanes.get_stats()["pool_available"] == self.helpers)

    def close(self) -> None:
        self.main.close()
        self.lanes.close()


@pytest.fixture
def pools(many_users: str) -> Iterator[Pools]:
    p = Pools(many_users, helpers=2)
    try:
        yield p
    finally:
        p.close()


async def _read(stream: CopyStream) -> bytes:
    await stream.start()
    body = b"".join([c async for c in stream.chunks()])
    await stream.aclose()
    return body


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "json"])
@pytest.mark.parametrize("fields,filters", [
    (None, {}),
    ("id,name,created_at", {"role": ["admin"]}),
    (None, {"active": ["false"], "created_at_from": ["2020-01-01T00:30:00Z"]}),
])
def test_a_split_export_is_byte_identical_to_export_bytes(
        many_users: str, pools: Pools, fmt: str, fields: Any, filters: dict[str, Any]) -> None:
    spec = parse_spec("users", fmt, fields, filters)
    stream = pools.stream(spec, chunk_bytes=16 * 1024)
    body = asyncio.run(_read(stream))
    expected = export_bytes(many_users, "users", fmt, fields, filters)
    assert stream.lanes == 3
    assert body == expected
    if fmt == "csv":  # cells here hold newlines: count records with a CSV reader
        records = len(list(csv.reader(io.StringIO(body.decode())))) - 1
    else:
        records = len(body.splitlines()) - (2 if fmt == "json" else 0)
    assert stream.rows == records > 0
    assert pools.all_back()


def test_split_counts_and_gzip(many_users: str, pools: Pools) -> None:
    stream = pools.stream(parse_spec("users", "csv", "id", {}), gzip=True)
    body = gzip.decompress(asyncio.run(_read(stream)))
    assert stream.lanes == 3
    assert body == export_bytes(many_users, "users", "csv", "id")
    assert stream.rows == USERS and body.count(b"\n") == USERS + 1  # one header


def test_every_lane_reads_the_snapshot_of_the_start(many_users: str, pools: Pools,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    before = export_bytes(many_users, "users", "ndjson")
    real = lanes.import_snapshot
    changed = []

    def change_then_import(snapshot: str) -> Any:
        # Rows change after the first connection took its snapshot, before the
        # helpers have read anything.
        if not changed:
            with db.connect(many_users, autocommit=True) as c:
                c.execute("INSERT INTO users (id, email, name, role) "
                          "VALUES ('ffff-late', 'late@example.com', 'Late', 'admin')")
                c.execute("DELETE FROM users WHERE id IN (SELECT id FROM users ORDER BY id "
                          "LIMIT 100 OFFSET 3000)")
                c.execute("UPDATE users SET name = 'Changed' WHERE id > 'e'")
            changed.append(True)
        return real(snapshot)

    monkeypatch.setattr(lanes, "import_snapshot", change_then_import)
    stream = pools.stream(parse_spec("users", "ndjson", None, {}))
    body = asyncio.run(_read(stream))
    assert changed and stream.lanes == 3
    assert body == before
    assert export_bytes(many_users, "users", "ndjson") != before  # the change did happen
    assert pools.all_back()


def test_stopping_a_split_export_cancels_every_lane(many_users: str, pools: Pools,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lanes, "LANE_AHEAD_CHUNKS", 1)

    async def main() -> None:
        stream = pools.stream(parse_spec("users", "ndjson", None, {}), chunk_bytes=4096)
        await stream.start()
        chunks = stream.chunks()
        await chunks.__anext__()
        await chunks.aclose()
        await stream.aclose()
        assert stream.lanes == 3

    asyncio.run(main())
    assert pools.all_back()
    with db.connect(many_users, autocommit=True) as c:
        states = c.execute("SELECT state, backend_xid IS NULL AND backend_xmin IS NULL "
                           "FROM pg_stat_activity WHERE application_name = %s",
                           (APP,)).fetchall()
    assert states == [("idle", True)] * 3  # no query running, no transaction left open


def test_busy_helper_connections_mean_fewer_lanes(many_users: str) -> None:
    pools = Pools(many_users, helpers=2)
    try:
        with pools.lanes.connection():  # one of the two helpers is taken elsewhere
            stream = pools.stream(parse_spec("users", "csv", None, {}), wait=0.2)
            body = asyncio.run(_read(stream))
        assert stream.lanes == 2
        assert body == export_bytes(many_users, "users", "csv")
        assert pools.all_back()
    finally:
        pools.close()


def test_a_small_table_is_read_by_one_connection(many_users: str, pools: Pools,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lanes, "SPLIT_MIN_PAGES", 10_000)
    stream = pools.stream(parse_spec("users", "csv", None, {}))
    body = asyncio.run(_read(stream))
    assert stream.lanes == 1
    assert body == export_bytes(many_users, "users", "csv")
    assert pools.lanes.get_stats().get("requests_num", 0) == 0  # no helper was taken


def test_a_lane_failing_fails_the_export_before_any_byte(many_users: str, pools: Pools) -> None:
    with db.connect(many_users, autocommit=True) as c:
        c.execute("ALTER TABLE users RENAME COLUMN name TO name_gone")
    try:
        stream = pools.stream(parse_spec("users", "csv", None, {}))

        async def main() -> None:
            with pytest.raises(psycopg.errors.UndefinedColumn):
                await stream.start()

        asyncio.run(main())
        assert pools.all_back()
    finally:
        with db.connect(many_users, autocommit=True) as c:
            c.execute("ALTER TABLE users RENAME COLUMN name_gone TO name")
