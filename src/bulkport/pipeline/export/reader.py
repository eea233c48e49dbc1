"""The one reader of an export: a COPY's rows, gathered into chunks, from libpq.

Every export reads through :func:`copy_chunks`, whether its bytes go to an
HTTP response (:mod:`.bridge`, :mod:`.lanes`) or to a file
(:mod:`.filesink`); so both carry the same bytes, decoded in one place.

NDJSON and JSON travel as ``COPY … (FORMAT binary)`` of one ``json`` column
(:mod:`bulkport.sql.exporting`): the reader checks the file header, strips
each row's 6-byte prefix, adds the newline and drops the trailer. CSV rows
are passed on as PostgreSQL wrote them.

Why libpq's own read: per row, ``AsyncCopy`` iteration costs ~1.8 µs of
Python, the sync copy iterator ~0.6 µs, and a non-blocking
``PGconn.get_copy_data(1)`` (psycopg's public libpq wrapper) with the row
copied into the chunk ~0.4 µs; waits happen in ``poll()``, which releases
the GIL. On a 2-core machine the server's CPU per row decides how close an
export gets to raw COPY (bench/README.md, "Exports").

A consumer stops a read by raising :class:`Stopped` from its ``emit``:
leaving psycopg's copy block with an exception cancels the query and drains
the connection, which stays usable.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import pq, sql

from bulkport.pipeline.formats import Format
from bulkport.sql.exporting import BINARY_HEADER, BINARY_TRAILER, ROW_PREFIX_BYTES

#: Bytes gathered before a chunk is handed on (bounds memory per export).
CHUNK_BYTES = 256 * 1024
#: How often a reader waiting for its consumer checks whether it should stop (seconds).
ROOM_POLL_SECONDS = 0.1

TRAILER_BYTES = len(BINARY_TRAILER)
_COMMAND_OK = pq.ExecStatus.COMMAND_OK

#: Where a reader hands each chunk (whole rows, about ``chunk_bytes``).
Emit = Callable[[bytes], None]


class Stopped(Exception):
    """The export was asked to stop (cancelled job, lost lease, client gone, shutdown)."""


def is_binary(fmt: Format) -> bool:
    """Whether an export in ``fmt`` is read as binary COPY (one json value per row)."""
    return fmt is not Format.CSV


def record_count(rows: int, fmt: Format) -> int:
    """The records of an export that read ``rows`` COPY rows: a CSV header is no record."""
    return rows - 1 if fmt is Format.CSV else rows


def copy_chunks(conn: psycopg.Connection[Any], statement: sql.Composed, *, binary: bool,
                chunk_bytes: int, emit: Emit,
                on_start: Callable[[], None] | None = None) -> int:
    """Run one COPY, handing its rows to ``emit`` in chunks; return the rows read.

    ``on_start`` is called once the query is accepted (before the first row),
    so that a query that fails does so before any byte is sent.
    """
    with conn.cursor() as cur, cur.copy(statement):
        if on_start is not None:
            on_start()
        pgconn = conn.pgconn
        rows, rest = _read_rows(pgconn, binary, chunk_bytes, emit)
        # libpq has left the COPY: its results are read before the last chunk is
        # handed on. A consumer that stops there (raising from emit) would otherwise
        # leave psycopg draining a COPY that is over ("no COPY in progress"), and
        # the pool would discard the connection.
        _check_results(pgconn)
        if rest:
            emit(rest)
    return rows


def _read_rows(pgconn: pq.abc.PGconn, binary: bool, limit: int, emit: Emit
               ) -> tuple[int, bytes]:
    """Read every row, emitting full chunks; return the rows read and the last part chunk."""
    # The hot path, once per row. libpq's non-blocking read costs ~0.2 µs per
    # row (psycopg's copy iterator ~0.6 µs, its async one ~1.8 µs); when no
    # whole row is buffered, the wait happens in poll(), which releases the GIL
    # (libpq's blocking read would hold it, stalling the other readers and the
    # event loop). Each row is copied into the chunk at once, so libpq's buffer
    # is freed while still in cache.
    get = pgconn.get_copy_data
    poller = select.poll()
    poller.register(pgconn.socket, select.POLLIN)
    wait = poller.poll
    consume = pgconn.consume_input
    buf = bytearray()
    rows = 0
    if binary:  # rows of one json value: strip the row prefix, add the newline
        while (got := get(1))[0] == 0:
            wait()
            consume()
        nbytes, data = got
        if nbytes > 0:
            buf += first_json_row(data)
            rows = 1 if buf else 0
        while nbytes >= 0:
            nbytes, data = get(1)
            if nbytes > TRAILER_BYTES:
                buf += data[ROW_PREFIX_BYTES:]
                buf += b"\n"
                rows += 1
                if len(buf) >= limit:
                    emit(bytes(buf))
                    buf.clear()
            elif nbytes == 0:
                wait()
                consume()
    else:
        while True:
            nbytes, data = get(1)
            if nbytes > 0:
                buf += data
                rows += 1
                if len(buf) >= limit:
                    emit(bytes(buf))
                    buf.clear()
            elif nbytes == 0:
                wait()
                consume()
            else:
                break
    if nbytes != -1:
        raise psycopg.OperationalError(
            (pgconn.error_message or b"COPY failed").decode("utf-8", "replace").strip())
    return rows, bytes(buf)


def _check_results(pgconn: pq.abc.PGconn) -> None:
    """Read the results that follow COPY data; raise the first error among them."""
    error: str | None = None
    while (result := pgconn.get_result()) is not None:
        if result.status != _COMMAND_OK and error is None:
            error = (result.error_message or b"COPY failed").decode("utf-8", "replace").strip()
    if error is not None:
        raise psycopg.DatabaseError(error)


def first_json_row(data: Any) -> bytes:
    """The first message of a binary COPY: the file header, then a row or the trailer."""
    head = bytes(data)
    if not head.startswith(BINARY_HEADER):
        raise psycopg.DataError("unexpected binary COPY header")
    rest = head[len(BINARY_HEADER):]
    if rest == BINARY_TRAILER:
        return b""
    return rest[ROW_PREFIX_BYTES:] + b"\n"
