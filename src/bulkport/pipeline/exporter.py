"""The export pipeline: one ``COPY … TO STDOUT`` whose bytes go out as they come.

Two ways to run it, both without a web server:

* :class:`CopyStream` streams an export to async code (the API's
  ``GET /v1/exports``): ``await stream.start()``, iterate ``stream.chunks()``,
  ``await stream.aclose()``. A reader thread runs the COPY on a connection
  taken from a pool; closing early (the client went away) cancels the query
  on the server, and the connection goes back to its pool clean. Closing
  works inside a cancelled task too.
* :func:`write_export` writes an export to a file from a sync connection (the
  export jobs of :mod:`bulkport.pipeline.export_job`).

Memory is bounded by ``chunk_bytes * (AHEAD_CHUNKS + 2)``: rows are gathered
into chunks and nothing else is held. PostgreSQL renders the rows
(:mod:`bulkport.sql.exporting`); Python only joins buffers, frames JSON arrays
and, when asked, gzips (in the reader thread, off the event loop).

Why a thread and libpq's own read: per row, ``AsyncCopy`` iteration costs
~1.8 µs of Python, an async readiness loop over :mod:`psycopg.pq` ~0.9 µs,
the sync copy iterator ~0.6 µs, and a blocking ``PGconn.get_copy_data(0)``
(psycopg's public libpq wrapper, which releases the GIL while it waits) with
the row copied into the chunk ~0.4 µs. On a 2-core machine the server's CPU
per row decides how close the HTTP stream gets to raw COPY (bench/README.md,
"Exports").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import zlib
from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractContextManager
from typing import IO, Any

import anyio
import psycopg
from psycopg import pq

from bulkport.pipeline.export_spec import ExportSpec
from bulkport.pipeline.formats import Format
from bulkport.sql.exporting import (
    BINARY_HEADER,
    BINARY_TRAILER,
    ROW_PREFIX_BYTES,
    SESSION_SETUP,
    export_statement,
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


class CopyStream:
    """One streaming export, read by a thread and consumed from async code.

    ``connection`` (e.g. ``pool.connection(timeout=5)``) is entered in the
    reader thread and left when the export ends or is stopped, which returns a
    pooled connection to its pool. At most ``AHEAD_CHUNKS`` chunks wait for
    the consumer, so memory stays flat however slow the client is.
    """

    def __init__(self, connection: AbstractContextManager[psycopg.Connection[Any]],
                 spec: ExportSpec, *, gzip: bool = False, chunk_bytes: int = CHUNK_BYTES,
                 ) -> None:
        self.connection = connection
        self.spec = spec
        self.encoder = Encoder(spec.format, gzip=gzip)
        self.chunk_bytes = chunk_bytes
        self.rows = 0
        self._stop = threading.Event()
        self._room = threading.Semaphore(AHEAD_CHUNKS)
        self._items: asyncio.Queue[Any] = asyncio.Queue()
        self._conn: psycopg.Connection[Any] | None = None
        # Held while a cancel is sent, and by the reader to let go of the connection:
        # a late cancel must never reach a connection back in the pool.
        self._conn_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._finished = False

    async def start(self) -> None:
        """Start the COPY: a query that fails raises here, before any byte is sent."""
        loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._produce, args=(loop,), daemon=True,
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
        """End the export; if it still runs, cancel its query and wait for the reader."""
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
            if self._conn is not None:
                with contextlib.suppress(psycopg.Error):
                    self._conn.cancel_safe(timeout=CANCEL_TIMEOUT_SECONDS)

    # --- the reader thread -------------------------------------------------------------

    def _produce(self, loop: asyncio.AbstractEventLoop) -> None:
        def put(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(self._items.put_nowait, item)
            except RuntimeError:  # the consumer's loop is closed: nobody reads any more
                self._stop.set()

        started = False
        try:
            statement = export_statement(self.spec.resource, self.spec.fields,
                                         self.spec.conditions, self.spec.format.value)
            with self.connection as conn:
                with self._conn_lock:
                    self._conn = conn
                try:
                    conn.execute(SESSION_SETUP)
                    with conn.cursor() as cur, cur.copy(statement):
                        put(None)  # started
                        started = True
                        self._read(conn, put)
                finally:
                    with self._conn_lock:
                        self._conn = None
            put(_END)
        except Stopped:
            put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            if self._stop.is_set() and started:
                put(_END)  # the cancellation we asked for
            else:
                put(exc)

    def _read(self, conn: psycopg.Connection[Any], put: Callable[[Any], None]) -> None:
        # libpq's blocking read releases the GIL while it waits and costs ~0.2 µs
        # per row; psycopg's copy iterator costs ~0.6 µs, its async one ~1.8 µs.
        # The hot path, once per row: each row is copied into the chunk at once, so
        # libpq's buffer is freed while still in cache (holding the rows and joining
        # them later costs twice as much).
        pgconn = conn.pgconn
        get = pgconn.get_copy_data
        limit = self.chunk_bytes
        buf = bytearray()
        rows = 0
        if self.spec.format is Format.CSV:
            while True:
                nbytes, data = get(0)
                if nbytes <= 0:
                    break
                buf += data
                rows += 1
                if len(buf) >= limit:
                    self._send(bytes(buf), put)
                    buf.clear()
        else:  # binary rows of one json value: strip the row prefix, add the newline
            nbytes, data = get(0)
            if nbytes > 0:
                buf += first_json_row(data)
                rows = 1 if buf else 0
            while nbytes > 0:
                nbytes, data = get(0)
                if nbytes <= 0:
                    break
                if nbytes == TRAILER_BYTES:
                    continue
                buf += data[ROW_PREFIX_BYTES:]
                buf += b"\n"
                rows += 1
                if len(buf) >= limit:
                    self._send(bytes(buf), put)
                    buf.clear()
        if nbytes != -1:
            raise psycopg.OperationalError(
                (pgconn.error_message or b"COPY failed").decode("utf-8", "replace").strip())
        self.rows = rows - (1 if self.spec.format is Format.CSV else 0)
        _check_results(pgconn)
        if buf:
            self._send(bytes(buf), put)
        tail = self.encoder.end()
        if tail:
            self._wait_room()
            put(tail)

    def _send(self, chunk: bytes, put: Callable[[Any], None]) -> None:
        out = self.encoder.feed(chunk)  # framing and gzip happen here, off the event loop
        if out:
            self._wait_room()
            put(out)

    def _wait_room(self) -> None:
        while not self._room.acquire(timeout=ROOM_POLL_SECONDS):
            if self._stop.is_set():
                raise Stopped()
        if self._stop.is_set():
            raise Stopped()


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
                 check_every_seconds: float = 1.0) -> tuple[int, int]:
    """Write the export to ``out``; return ``(record_count, bytes_written)``.

    ``keep_going`` is polled about every ``check_every_seconds``; when it says
    no, the query is cancelled and :class:`Stopped` raised.
    """
    encoder = Encoder(spec.format)
    statement = export_statement(spec.resource, spec.fields, spec.conditions, spec.format.value)
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
