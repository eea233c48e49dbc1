"""Reading a large table over several connections: id ranges in one snapshot.

Like ``pg_dump --jobs``: a table of ``SPLIT_MIN_PAGES`` or more is cut into
id ranges of about ``PAGES_PER_RANGE`` pages (boundaries from a block sample,
:func:`~bulkport.sql.exporting.split_points`), dealt out in turn to the
connections (the lanes), which all read in the snapshot of the first one.
Each lane runs in its own thread and reads ahead at most
``LANE_AHEAD_CHUNKS`` chunks; :func:`merge` passes the chunks on in range
order, so the result is byte for byte that of one statement
(docs/exports.md, "Parallel reading"). On a 2-core machine a second
connection lets PostgreSQL render rows on both cores.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import psycopg
from psycopg import sql

from bulkport.pipeline.export.reader import ROOM_POLL_SECONDS, Emit, Stopped, copy_chunks
from bulkport.pipeline.export_spec import ExportSpec
from bulkport.sql.exporting import (
    BEGIN_SNAPSHOT,
    EXPORT_SNAPSHOT,
    SESSION_SETUP,
    IdRange,
    export_statement,
    id_ranges,
    import_snapshot,
    split_points,
    table_pages,
)

log = logging.getLogger(__name__)

#: Tables of fewer pages (8 KiB) than this are read by one connection.
SPLIT_MIN_PAGES = 1000
#: Table pages per id range of a split export (~30,000 users, ~3 MB of CSV).
PAGES_PER_RANGE = 400
#: Most id ranges of one export.
MAX_RANGES = 10_000
#: Table blocks sampled per id range to place the range boundaries.
SAMPLE_BLOCKS_PER_RANGE = 4
#: Chunks a lane of a split export reads ahead of the merge (4 MiB with CHUNK_BYTES).
LANE_AHEAD_CHUNKS = 16

ConnectionSource = AbstractContextManager[psycopg.Connection[Any]]
#: A connection and the statements (one per id range) it reads, in order.
Lane = tuple[psycopg.Connection[Any], list[sql.Composed]]

_RANGE_END = object()


def plan(spec: ExportSpec, connection: ConnectionSource, helpers: Sequence[ConnectionSource],
         enter: Callable[[ConnectionSource], psycopg.Connection[Any]]) -> list[Lane]:
    """Take the connections and decide who reads which id ranges.

    ``enter`` takes a connection for the rest of the export (and makes it
    cancellable). ``helpers`` are only entered when the table is large enough
    to split; one that cannot be had just means fewer lanes.
    """
    conn = enter(connection)
    conn.execute(SESSION_SETUP)

    def statements(ranges: list[IdRange]) -> list[sql.Composed]:
        return [export_statement(spec.resource, spec.fields, spec.conditions,
                                 spec.format.value, r, header=i == 0, limit=spec.limit)
                for i, r in enumerate(ranges)]

    one = [(conn, statements([(None, None)]))]
    if not helpers or spec.limit is not None:  # a peek at a few rows: one lane
        return one
    row = conn.execute(table_pages(spec.resource)).fetchone()
    pages = int(row[0]) if row else 0
    if pages < SPLIT_MIN_PAGES:
        return one
    conn.execute(BEGIN_SNAPSHOT)
    count = min(MAX_RANGES, pages // PAGES_PER_RANGE)
    percent = min(100.0, 100.0 * SAMPLE_BLOCKS_PER_RANGE * count / pages)
    row = conn.execute(split_points(spec.resource, spec.conditions, count, percent)).fetchone()
    ranges = id_ranges(row[0] if row and row[0] else [])
    conns = [conn]
    if len(ranges) > 1:
        row = conn.execute(EXPORT_SNAPSHOT).fetchone()
        snapshot = str(row[0]) if row else ""
        for helper in helpers:
            try:
                extra = enter(helper)
                extra.execute(SESSION_SETUP)
                extra.execute(BEGIN_SNAPSHOT)
                extra.execute(import_snapshot(snapshot))
            except psycopg.Error as exc:  # busy pool, lost connection: fewer lanes
                log.info("export of %s reads with %d connection(s): %s",
                         spec.resource.name, len(conns), exc)
                break
            conns.append(extra)
    work = statements(ranges)
    return [(c, work[i::len(conns)]) for i, c in enumerate(conns)]


def merge(lanes: list[Lane], *, binary: bool, chunk_bytes: int, send: Emit,
          on_start: Callable[[], None], stop: threading.Event,
          cancel: Callable[[], None], name: str) -> int:
    """Read every lane in its own thread; ``send`` their chunks in range order.

    Returns the rows read. ``stop`` set (the consumer went away) ends every
    lane within ``ROOM_POLL_SECONDS``; a failing lane or consumer cancels the
    queries of all lanes (``cancel``) before the error goes on.
    """
    queues = [queue.Queue[Any](maxsize=LANE_AHEAD_CHUNKS) for _ in lanes]
    counts = [0] * len(lanes)

    def lane(i: int) -> None:
        conn, statements = lanes[i]
        out = queues[i]

        def emit(chunk: Any) -> None:
            while True:
                try:
                    out.put(chunk, timeout=ROOM_POLL_SECONDS)
                    return
                except queue.Full:
                    if stop.is_set():
                        raise Stopped() from None

        try:
            for n, statement in enumerate(statements):
                counts[i] += copy_chunks(conn, statement, binary=binary, chunk_bytes=chunk_bytes,
                                         emit=emit, on_start=on_start if i == n == 0 else None)
                emit(_RANGE_END)
        except Stopped:
            pass
        except BaseException as exc:
            with contextlib.suppress(Stopped):
                emit(exc)

    def take(source: queue.Queue[Any]) -> Any:
        while True:
            try:
                return source.get(timeout=ROOM_POLL_SECONDS)
            except queue.Empty:
                if stop.is_set():
                    raise Stopped() from None

    threads = [threading.Thread(target=lane, args=(i,), daemon=True, name=f"{name}-{i}")
               for i in range(len(lanes))]
    for t in threads:
        t.start()
    try:
        ranges = sum(len(statements) for _, statements in lanes)
        for r in range(ranges):
            source = queues[r % len(lanes)]
            while (item := take(source)) is not _RANGE_END:
                if isinstance(item, BaseException):
                    raise item
                send(item)
    except BaseException:
        stop.set()
        cancel()
        raise
    finally:
        for t in threads:
            t.join()
    return sum(counts)
