"""The one export reader against a real PostgreSQL: chunks of whole rows, and stopping.

Both ways out of an export (the streamed response and the job file) read
through :func:`copy_chunks`; what it hands on and how a consumer stops it
decide both.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from bulkport import db
from bulkport.pipeline.export.reader import Stopped, copy_chunks, is_binary
from bulkport.pipeline.export_spec import parse_spec
from bulkport.sql.exporting import SESSION_SETUP, export_statement
from tests.export_data import export_bytes

USERS = 3000


@pytest.fixture
def users(clean_db: str) -> str:
    with db.connect(clean_db, autocommit=True) as c:
        c.execute("INSERT INTO users (id, email, name, role) SELECT 'u' || i, 'u' || i || "
                  "'@example.com', 'line' || chr(10) || i, 'reader' "
                  "FROM generate_series(1, %s) i", (USERS,))
    return clean_db


def _statement(fmt: str) -> Any:
    spec = parse_spec("users", fmt, None, {})
    return spec, export_statement(spec.resource, spec.fields, spec.conditions, fmt,
                                  limit=spec.limit)


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_chunks_hold_whole_rows_of_about_chunk_bytes(users: str, fmt: str) -> None:
    spec, statement = _statement(fmt)
    chunks: list[bytes] = []
    with db.connect(users, autocommit=True) as conn:
        conn.execute(SESSION_SETUP)
        rows = copy_chunks(conn, statement, binary=is_binary(spec.format), chunk_bytes=4096,
                           emit=chunks.append)
    assert rows == USERS + (1 if fmt == "csv" else 0)  # CSV: the header is a row
    assert b"".join(chunks) == export_bytes(users, "users", fmt)
    assert len(chunks) > 10
    assert all(len(c) >= 4096 for c in chunks[:-1])
    assert all(c.endswith(b"\n") for c in chunks)
    if fmt == "ndjson":  # a chunk ends where a row ends: every line is a whole record
        assert sum(c.count(b"\n") for c in chunks) == USERS


def test_stopping_from_emit_cancels_the_copy_and_keeps_the_connection(users: str) -> None:
    _, statement = _statement("ndjson")
    seen: list[bytes] = []

    def emit(chunk: bytes) -> None:
        seen.append(chunk)
        raise Stopped()

    with db.connect(users, autocommit=True) as conn:
        conn.execute(SESSION_SETUP)
        with pytest.raises(Stopped):
            copy_chunks(conn, statement, binary=True, chunk_bytes=1024, emit=emit)
        assert len(seen) == 1
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        row = conn.execute("SELECT count(*) FROM users").fetchone()
        assert row is not None and row[0] == USERS


def test_a_failing_statement_raises_before_on_start(users: str) -> None:
    _, bad = _statement("csv")
    started: list[bool] = []
    with db.connect(users, autocommit=True) as conn:
        conn.execute("ALTER TABLE users RENAME COLUMN name TO name_gone")
        try:
            with pytest.raises(psycopg.errors.UndefinedColumn):
                copy_chunks(conn, bad, binary=False, chunk_bytes=1024, emit=lambda c: None,
                            on_start=lambda: started.append(True))
        finally:
            conn.execute("ALTER TABLE users RENAME COLUMN name_gone TO name")
    assert started == []
