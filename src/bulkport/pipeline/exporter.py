"""The export pipeline: ``COPY … TO STDOUT`` whose bytes go out as they come.

Two ways to run it, both without a web server:

* :class:`CopyStream` streams an export to async code (the API's
  ``GET /v1/exports``): ``await stream.start()``, iterate ``stream.chunks()``,
  ``await stream.aclose()``. Reader threads run the COPY on connections
  taken from pools; closing early (the client went away) cancels the queries
  on the server, and the connections go back to their pools clean. Closing
  works inside a cancelled task too. A large table is read in parallel: id
  ranges dealt out to several connections that share one snapshot, merged
  back in order (:meth:`CopyStream._plan`, docs/exports.md "Parallel
  reading").
* :func:`write_export` writes an export to a file from a sync connection (the
  export jobs of :mod:`bulkport.pipeline.export_job`).

Memory is bounded by ``chunk_bytes * (AHEAD_CHUNKS + 2)``, plus
``LANE_AHEAD_CHUNKS`` chunks per connection of a split export: rows are
gathered into chunks and nothing else is held. PostgreSQL renders the rows
(:mod:`bulkport.sql.exporting`); Python only joins buffers, frames JSON arrays
and, when asked, gzips (in a reader thread, off the event loop).

Why threads and libpq's own read: per row, ``AsyncCopy`` iteration costs
~1.8 µs of Python, the sync copy iterator ~0.6 µs, and a non-blocking
``PGconn.get_copy_data(1)`` (psycopg's public libpq wrapper) with the row
copied into the chunk ~0.4 µs; waits happen in ``poll()``, which releases
the GIL (:func:`_read_rows`). On a 2-core machine the server's CPU per row
decides how close the HTTP stream gets to raw COPY (bench/README.md,
"Exports").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import select
import threading
import time
import zlib
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import IO, Any

import anyio
import psycopg
from psycopg import pq, sql

from bulkport.pipeline.export_spec import ExportSpec
from bulkport.pipeline.formats import Format
from bulkport.sql.exporting import (
    BEGIN_SNAPSHOT,
    BINARY_HEADER,
    BINARY_TRAILER,
    EXPORT_SNAPSHOT,
    ROW_PREFIX_BYTES,
    SESSION_SETUP,
    IdRange,
    export_statement,
    id_ranges,
    import_snapshot,
    split_points,
    table_pages,
)

log = logging.getLogger(__name__)

#: Bytes gathered before a chunk is handed on (bounds memory per export).
CHUNK_BYTES = 256 * 1024
#: Chunks read ahead of the consumer (with CHUNK_BYTES: the memory bound).
AHEAD_CHUNKS = 2
#: How often a reader waiting for the consumer checks whether it should stop (seconds).
ROOM_POLL_SECONDS = 0.1
#: gzip level: 1 (nginx's default) compresses JSON/CSV 4-6x at ~3x the speed of 6.
GZIP_LEVEL = 1
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
#: Longest wait for the reader of a cancelled export to stop (seconds).
CANCEL_TIMEOUT_SECONDS = 10.0

_COMMAND_OK = pq.ExecStatus.COMMAND_OK
TRAILER_BYTES = len(BINARY_TRAILER)


class Stopped(Exception):
    """The export was asked to stop (cancelled job, lost lease, shutdown)."""


class Encoder:
    """Turns chunks of COPY rows into the bytes sent: JSON array framing, gzip."""

    def __init__(self, fmt: Format, *, gzip: bool = False) -> None:
        self.json = fmt is Format.JSON
        self.started = False
        self.compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31) if gzip else None

    def feed(self, chunk: bytes) -> bytes:
        if self.json:
            # Every raw newline ends a row (JSON escapes newlines in strings), and a
            # chunk holds whole rows: "a\nb\n" -> "a,\nb" after "[\n" or ",\n".
            head = b",\n" if self.started else b"[\n"
            self.started = True
            chunk = head + chunk[:-1].replace(b"\n", b",\n")
        return self.compressor.compress(chunk) if self.compressor else chunk

    def end(self) -> bytes:
        tail = b""
        if self.json:
            tail = b"\n]\n" if self.started else b"[]\n"
        if self.compressor:
            return self.compressor.compress(tail) + self.compressor.flush()
        return tail


# --- streaming ----------------------------------------------------------------------------


_END = object()
_RANGE_END = object()


class CopyStream:
    """One streaming export, read by threads and consumed from async code.

    ``connection`` (e.g. ``pool.connection(timeout=5)``) is entered in a
    reader thread and left when the export ends or is stopped, which returns a
    pooled connection to its pool. ``helpers`` are more such connections, only
    entered when the table is large enough to split (:meth:`_plan`); one that
    cannot be had in time just means fewer lanes. At most ``AHEAD_CHUNKS``
    chunks wait for the consumer and ``LANE_AHEAD_CHUNKS`` per lane wait for
    the merge, so memory stays flat however large the table and however slow
    the client.
    """

    def __init__(self, connection: AbstractContextManager[psycopg.Connection[Any]],
                 spec: ExportSpec, *, gzip: bool = False, chunk_bytes: int = CHUNK_BYTES,
                 helpers: Sequence[AbstractContextManager[psycopg.Connection[Any]]] = (),
                 ) -> None:
        self.connection = connection
        self.helpers = helpers
        self.spec = spec
        self.encoder = Encoder(spec.format, gzip=gzip)
        self.chunk_bytes = chunk_bytes
        self.rows = 0
        #: Connections the export read with (1 unless it was split).
        self.lanes = 0
        self._stop = threading.Event()
        self._room = threading.Semaphore(AHEAD_CHUNKS)
        self._items: asyncio.Queue[Any] = asyncio.Queue()
        # The connections in use, for cancelling. Held while a cancel is sent and
        # while a connection is let go: a late cancel must never reach a
        # connection back in its pool.
        self._conns: list[psycopg.Connection[Any]] = []
        self._conn_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._finished = False
        self._put: Callable[[Any], None] = lambda item: None

    async def start(self) -> None:
        """Start the COPY: a query that fails raises here, before any byte is sent."""
        loop = asyncio.get_running_loop()

        def put(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(self._items.put_nowait, item)
            except RuntimeError:  # the consumer's loop is closed: nobody reads any more
                self._stop.set()

        self._put = put
        self._thread = threading.Thread(target=self._produce, daemon=True,
                                        name=f"export-{self.spec.resource.name}")
        self._thread.start()
        first = await self._items.get()
        if isinstance(first, BaseException):
            self._finished = True
            raise first

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The export's bytes, encoded, in chunks of about ``chunk_bytes``."""
        while True:
            item = await self._items.get()
            if item is _END:
                self._finished = True
                return
            if isinstance(item, BaseException):
                self._finished = True
                raise item
            self._room.release()
            yield item

    async def aclose(self) -> None:
        """End the export; if it still runs, cancel its queries and wait for the readers."""
        with anyio.CancelScope(shield=True):
            thread = self._thread
            if thread is None:
                return
            if thread.is_alive():
                self._stop.set()
                self._room.release()  # wake a reader waiting for room
                if not self._finished:
                    log.info("export of %s stopped early: cancelling its query",
                             self.spec.resource.name)
                    await anyio.to_thread.run_sync(self._cancel)
                await anyio.to_thread.run_sync(thread.join, CANCEL_TIMEOUT_SECONDS)
                if thread.is_alive():
                    log.warning("the reader of an export did not stop in %.0f s",
                                CANCEL_TIMEOUT_SECONDS)

    def _cancel(self) -> None:
        # A reader blocked on PostgreSQL (a slow filter) only wakes up this way.
        with self._conn_lock:
            for conn in self._conns:
                with contextlib.suppress(psycopg.Error):
                    conn.cancel_safe(timeout=CANCEL_TIMEOUT_SECONDS)

    @contextlib.contextmanager
    def _hold(self, connection: AbstractContextManager[psycopg.Connection[Any]]
              ) -> Iterator[psycopg.Connection[Any]]:
        with connection as conn:
            with self._conn_lock:
                self._conns.append(conn)
            try:
                yield conn
            finally:
                with self._conn_lock:
                    self._conns.remove(conn)

    # --- the reader threads ------------------------------------------------------------

    def _produce(self) -> None:
        started = threading.Event()

        def on_start() -> None:
            started.set()
            self._put(None)

        try:
            with contextlib.ExitStack() as stack:
                lanes = self._plan(stack)
                self.lanes = len(lanes)
                if len(lanes) == 1:
                    conn, statements = lanes[0]
                    for i, statement in enumerate(statements):
                        self.rows += _copy(conn, statement, self._binary, self.chunk_bytes,
                                           self._send, on_start if i == 0 else None)
                else:
                    self._merge(lanes, on_start)
                for conn, _ in lanes:
                    if conn.info.transaction_status != pq.TransactionStatus.IDLE:
                        conn.execute("COMMIT")
            if self.spec.format is Format.CSV:
                self.rows -= 1  # the header
            tail = self.encoder.end()
            if tail:
                self._wait_room()
                self._put(tail)
            self._put(_END)
        except Stopped:
            self._put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            if self._stop.is_set() and started.is_set():
                self._put(_END)  # the cancellation we asked for
            else:
                self._put(exc)

    @property
    def _binary(self) -> bool:
        return self.spec.format is not Format.CSV

    def _plan(self, stack: contextlib.ExitStack
              ) -> list[tuple[psycopg.Connection[Any], list[sql.Composed]]]:
        """Take the connections and decide who reads which id ranges.

        A table of ``SPLIT_MIN_PAGES`` or more, with helper connections at
        hand, is cut into ranges of about ``PAGES_PER_RANGE`` pages, dealt out
        in turn to the connections, which all read in one snapshot.
        """
        spec = self.spec
        conn = stack.enter_context(self._hold(self.connection))
        conn.execute(SESSION_SETUP)

        def statements(ranges: list[IdRange]) -> list[sql.Composed]:
            return [export_statement(spec.resource, spec.fields, spec.conditions,
                                     spec.format.value, r, header=i == 0, limit=spec.limit)
                    for i, r in enumerate(ranges)]

        one = [(conn, statements([(None, None)]))]
        if not self.helpers or spec.limit is not None:  # a peek at a few rows: one lane
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
            for helper in self.helpers:
                try:
                    extra = stack.enter_context(self._hold(helper))
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

    def _merge(self, lanes: list[tuple[psycopg.Connection[Any], list[sql.Composed]]],
               on_start: Callable[[], None]) -> None:
        """Run one reader thread per lane and pass their chunks on in range order."""
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
                        if self._stop.is_set():
                            raise Stopped() from None

            try:
                for n, statement in enumerate(statements):
                    counts[i] += _copy(conn, statement, self._binary, self.chunk_bytes, emit,
                                       on_start if i == 0 and n == 0 else None)
                    emit(_RANGE_END)
            except Stopped:
                pass
            except BaseException as exc:
                with contextlib.suppress(Stopped):
                    emit(exc)

        threads = [threading.Thread(target=lane, args=(i,), daemon=True,
                                    name=f"export-{self.spec.resource.name}-{i}")
                   for i in range(len(lanes))]
        for t in threads:
            t.start()
        try:
            ranges = sum(len(statements) for _, statements in lanes)
            for r in range(ranges):
                source = queues[r % len(lanes)]
                while (item := self._take(source)) is not _RANGE_END:
                    if isinstance(item, BaseException):
                        raise item
                    self._send(item)
        except BaseException:
            self._stop.set()
            self._cancel()
            raise
        finally:
            for t in threads:
                t.join()
        self.rows = sum(counts)

    def _take(self, source: queue.Queue[Any]) -> Any:
        while True:
            try:
                return source.get(timeout=ROOM_POLL_SECONDS)
            except queue.Empty:
                if self._stop.is_set():
                    raise Stopped() from None

    def _send(self, chunk: bytes) -> None:
        out = self.encoder.feed(chunk)  # framing and gzip happen here, off the event loop
        if out:
            self._wait_room()
            self._put(out)

    def _wait_room(self) -> None:
        while not self._room.acquire(timeout=ROOM_POLL_SECONDS):
            if self._stop.is_set():
                raise Stopped()
        if self._stop.is_set():
            raise Stopped()


def _copy(conn: psycopg.Connection[Any], statement: sql.Composed, binary: bool, limit: int,
          emit: Callable[[bytes], None], on_start: Callable[[], None] | None) -> int:
    """Run one COPY, handing its rows to ``emit`` in chunks; return the rows read."""
    with conn.cursor() as cur, cur.copy(statement):
        if on_start is not None:
            on_start()
        pgconn = conn.pgconn
        rows = _read_rows(pgconn, binary, limit, emit)
        _check_results(pgconn)
    return rows


def _read_rows(pgconn: pq.abc.PGconn, binary: bool, limit: int,
               emit: Callable[[bytes], None]) -> int:
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
    if buf:
        emit(bytes(buf))
    return rows


def _check_results(pgconn: pq.abc.PGconn) -> None:
    """Read the results that follow COPY data; raise the first error among them."""
    error: str | None = None
    while (result := pgconn.get_result()) is not None:
        if result.status != _COMMAND_OK and error is None:
            error = (result.error_message or b"COPY failed").decode("utf-8", "replace").strip()
    if error is not None:
        raise psycopg.DatabaseError(error)


# --- to a file (sync) ---------------------------------------------------------------------


def write_export(conn: psycopg.Connection[Any], spec: ExportSpec, out: IO[bytes], *,
                 keep_going: Callable[[], bool] = lambda: True,
                 check_every_seconds: float = 1.0, gzip: bool = False) -> tuple[int, int]:
    """Write the export to ``out``, gzipped with ``gzip``; return ``(records, bytes_written)``.

    ``keep_going`` is polled about every ``check_every_seconds``; when it says
    no, the query is cancelled and :class:`Stopped` raised.
    """
    encoder = Encoder(spec.format, gzip=gzip)
    statement = export_statement(spec.resource, spec.fields, spec.conditions, spec.format.value,
                                 limit=spec.limit)
    rows = written = 0
    buf = bytearray()
    binary = spec.format is not Format.CSV
    next_check = time.monotonic() + check_every_seconds
    conn.execute(SESSION_SETUP)
    with conn.cursor() as cur, cur.copy(statement) as copy:
        first = True
        for data in copy:
            if not binary:
                buf += data
            elif first:
                first = False
                row = first_json_row(data)
                if not row:
                    continue
                buf += row
            elif len(data) == TRAILER_BYTES:
                continue
            else:
                buf += data[ROW_PREFIX_BYTES:]
                buf += b"\n"
            rows += 1
            if len(buf) >= CHUNK_BYTES:
                written += out.write(encoder.feed(bytes(buf)))
                buf.clear()
                if time.monotonic() >= next_check:
                    if not keep_going():
                        raise Stopped()  # leaving the copy block cancels the query
                    next_check = time.monotonic() + check_every_seconds
        if buf:
            written += out.write(encoder.feed(bytes(buf)))
        written += out.write(encoder.end())
    return rows - (1 if spec.format is Format.CSV else 0), written


def first_json_row(data: Any) -> bytes:
    """The first message of a binary COPY: the file header, then a row or the trailer."""
    head = bytes(data)
    if not head.startswith(BINARY_HEADER):
        raise psycopg.DataError("unexpected binary COPY header")
    rest = head[len(BINARY_HEADER):]
    if rest == BINARY_TRAILER:
        return b""
    return rest[ROW_PREFIX_BYTES:] + b"\n"
