"""The export pipeline: one ``COPY … TO STDOUT`` whose bytes go out as they come.

Two ways to run it, both without a web server:

* :class:`CopyStream` streams an export from an async connection (the API's
  ``GET /v1/exports``): ``await stream.start()``, iterate ``stream.chunks()``,
  ``await stream.aclose()``. Closing early (the client went away) cancels the
  query on the server and drains the connection, so it goes back to its pool
  clean; this happens even inside a cancelled task.
* :func:`write_export` writes an export to a file from a sync connection (the
  export jobs of :mod:`bulkport.pipeline.export_job`).

Memory is bounded by ``chunk_bytes``: rows are gathered into chunks of about
that size and nothing else is held. PostgreSQL renders the rows
(:mod:`bulkport.sql.exporting`); Python only joins buffers, frames JSON arrays
and, when asked, gzips.

The async reader talks to libpq through :mod:`psycopg.pq` (psycopg's public
libpq wrapper) inside psycopg's ``cursor.copy()`` block instead of iterating
the copy object: ``AsyncCopy.read()`` costs ~1.8 µs per row in Python against
~0.7 µs here, which on a 2-core machine decides whether the HTTP stream keeps
up with raw COPY (bench/README.md, "Exports").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import IO, Any

import anyio
import psycopg
from psycopg import pq

from bulkport.pipeline.export_spec import ExportSpec
from bulkport.pipeline.formats import Format
from bulkport.sql.exporting import SESSION_SETUP, export_statement

log = logging.getLogger(__name__)

#: Bytes gathered before a chunk is handed on (bounds memory per export).
CHUNK_BYTES = 256 * 1024
#: Below this many bytes per wake-up the reader pauses briefly so that rows
#: accumulate: waking per row costs more than the row (bytes).
SMALL_READ_BYTES = 32 * 1024
#: That pause (seconds): ~200 KB at raw-COPY speed, under a socket buffer.
COALESCE_SECONDS = 0.001
#: gzip level: 1 (nginx's default) compresses JSON/CSV 4-6x at ~3x the speed of 6.
GZIP_LEVEL = 1
#: Longest wait for the server to stop a cancelled export (seconds).
CANCEL_TIMEOUT_SECONDS = 10.0

_COMMAND_OK = pq.ExecStatus.COMMAND_OK


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


# --- streaming (async) -------------------------------------------------------------------


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await fut
    finally:
        loop.remove_reader(fd)


class CopyStream:
    """One streaming export over one async connection.

    ``connection`` is entered on :meth:`start` and left on :meth:`aclose`: a
    pool's ``connection()`` returns the connection to its pool.
    """

    def __init__(self, connection: AbstractAsyncContextManager[psycopg.AsyncConnection[Any]],
                 spec: ExportSpec, *, gzip: bool = False, chunk_bytes: int = CHUNK_BYTES,
                 ) -> None:
        self.connection = connection
        self.spec = spec
        self.encoder = Encoder(spec.format, gzip=gzip)
        self.chunk_bytes = chunk_bytes
        self.rows = 0
        self.bytes_sent = 0
        self._stack = AsyncExitStack()
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._done = False

    async def start(self) -> None:
        """Run the COPY: a failing query raises here, before any byte is sent."""
        try:
            conn = await self._stack.enter_async_context(self.connection)
            self._conn = conn
            await conn.execute(SESSION_SETUP)
            cur = await self._stack.enter_async_context(conn.cursor())
            statement = export_statement(self.spec.resource, self.spec.fields,
                                         self.spec.conditions, self.spec.format.value)
            await self._stack.enter_async_context(cur.copy(statement))
        except BaseException:
            self._done = True  # a failed COPY leaves nothing to cancel
            await self._stack.aclose()
            raise

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The export's bytes, encoded, in chunks of about ``chunk_bytes``."""
        gzip = self.encoder.compressor is not None
        async for raw in self._raw_chunks():
            out = await anyio.to_thread.run_sync(self.encoder.feed, raw) if gzip \
                else self.encoder.feed(raw)
            if out:
                self.bytes_sent += len(out)
                yield out
        tail = self.encoder.end()
        if tail:
            self.bytes_sent += len(tail)
            yield tail

    async def _raw_chunks(self) -> AsyncGenerator[bytes, None]:
        assert self._conn is not None, "start() first"
        pgconn = self._conn.pgconn
        loop = asyncio.get_running_loop()
        get = pgconn.get_copy_data
        limit = self.chunk_bytes
        parts: list[Any] = []
        size = rows = got = 0  # got: bytes read since the reader last waited
        paused = False
        while True:
            nbytes, data = get(1)
            if nbytes > 0:
                parts.append(data)
                size += nbytes
                got += nbytes
                rows += 1
                if size >= limit:
                    chunk = b"".join(parts)
                    parts.clear()
                    size = 0
                    yield chunk
                continue
            if nbytes == 0:  # nothing buffered: wait for the server
                if got < SMALL_READ_BYTES and not paused:
                    await asyncio.sleep(COALESCE_SECONDS)
                    paused = True
                else:
                    await _readable(loop, pgconn.socket)
                    paused = False
                got = 0
                pgconn.consume_input()
                continue
            break  # -1: COPY finished; -2: error, reported by the result
        self.rows = rows - (1 if self.spec.format is Format.CSV else 0)
        if parts:
            yield b"".join(parts)
        await self._collect_results()
        self._done = True

    async def _collect_results(self) -> None:
        assert self._conn is not None
        pgconn = self._conn.pgconn
        loop = asyncio.get_running_loop()
        error: psycopg.Error | None = None
        while True:
            while pgconn.is_busy():
                await _readable(loop, pgconn.socket)
                pgconn.consume_input()
            result = pgconn.get_result()
            if result is None:
                break
            if result.status != _COMMAND_OK and error is None:
                message = (result.error_message or b"COPY failed").decode("utf-8", "replace")
                error = psycopg.DatabaseError(message.strip())
        if error is not None:
            raise error

    async def aclose(self) -> None:
        """End the export; if it is still running, cancel it and drain the connection."""
        with anyio.CancelScope(shield=True):
            if not self._done and self._conn is not None:
                await self._abort(self._conn)
            self._done = True
            await self._stack.aclose()

    async def _abort(self, conn: psycopg.AsyncConnection[Any]) -> None:
        log.info("export of %s stopped early: cancelling its query", self.spec.resource.name)
        try:
            with anyio.fail_after(CANCEL_TIMEOUT_SECONDS):
                await conn.cancel_safe(timeout=CANCEL_TIMEOUT_SECONDS)
                pgconn = conn.pgconn
                loop = asyncio.get_running_loop()
                while True:
                    nbytes, _ = pgconn.get_copy_data(1)
                    if nbytes < 0:
                        break
                    if nbytes == 0:
                        await _readable(loop, pgconn.socket)
                        pgconn.consume_input()
                with contextlib.suppress(psycopg.Error):
                    await self._collect_results()
        except (TimeoutError, psycopg.Error, OSError) as exc:
            # The connection is in an unknown state: close it; the pool replaces it.
            log.warning("could not cancel an export cleanly (%s); closing its connection", exc)
            await conn.close()


# --- to a file (sync) ---------------------------------------------------------------------


class Stopped(Exception):
    """The export was asked to stop (cancelled job, lost lease, shutdown)."""


def write_export(conn: psycopg.Connection[Any], spec: ExportSpec, out: IO[bytes], *,
                 keep_going: Callable[[], bool] = lambda: True,
                 check_every_seconds: float = 1.0) -> tuple[int, int]:
    """Write the export to ``out``; return ``(record_count, bytes_written)``.

    ``keep_going`` is polled about every ``check_every_seconds``; when it says
    no, the query is cancelled and :class:`Stopped` raised.
    """
    encoder = Encoder(spec.format)
    statement = export_statement(spec.resource, spec.fields, spec.conditions, spec.format.value)
    rows = written = size = 0
    parts: list[Any] = []
    next_check = time.monotonic() + check_every_seconds
    conn.execute(SESSION_SETUP)
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for data in copy:
            parts.append(data)
            size += len(data)
            rows += 1
            if size >= CHUNK_BYTES:
                written += out.write(encoder.feed(b"".join(parts)))
                parts.clear()
                size = 0
                if time.monotonic() >= next_check:
                    if not keep_going():
                        raise Stopped()  # leaving the copy block cancels the query
                    next_check = time.monotonic() + check_every_seconds
        if parts:
            written += out.write(encoder.feed(b"".join(parts)))
        written += out.write(encoder.end())
    return rows - (1 if spec.format is Format.CSV else 0), written
