"""From reader threads to async code: a streaming export (``GET /v1/exports``).

:class:`CopyStream`: ``await stream.start()``, iterate ``stream.chunks()``,
``await stream.aclose()``. Reader threads run the COPY (:mod:`.reader`,
split over several connections by :mod:`.lanes` when the table is large)
on connections taken from pools; closing early (the client went away)
cancels the queries on the server, and the connections go back to their
pools clean. Closing works inside a cancelled task too.

Why threads: libpq's non-blocking read from a thread costs a third of
psycopg's async copy per row, and the waits release the GIL, so the event
loop stays free. Memory is bounded by ``chunk_bytes * (AHEAD_CHUNKS + 2)``,
plus ``LANE_AHEAD_CHUNKS`` chunks per connection of a split export: rows are
gathered into chunks and nothing else is held. Framing and gzip
(:mod:`.encoder`) run in the reader thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from typing import Any

import anyio
import psycopg
from psycopg import pq

from bulkport.pipeline.export import lanes as lane_plan
from bulkport.pipeline.export.encoder import Encoder
from bulkport.pipeline.export.lanes import ConnectionSource
from bulkport.pipeline.export.reader import (
    CHUNK_BYTES,
    ROOM_POLL_SECONDS,
    Stopped,
    copy_chunks,
    is_binary,
    record_count,
)
from bulkport.pipeline.export_spec import ExportSpec
from bulkport.sql import QUERIES

log = logging.getLogger(__name__)

#: Chunks read ahead of the consumer (with CHUNK_BYTES: the memory bound).
AHEAD_CHUNKS = 2
#: Longest wait for the reader of a cancelled export to stop (seconds).
CANCEL_TIMEOUT_SECONDS = 10.0

_END = object()


class CopyStream:
    """One streaming export, read by threads and consumed from async code.

    ``connection`` (e.g. ``pool.connection(timeout=5)``) is entered in a
    reader thread and left when the export ends or is stopped, which returns a
    pooled connection to its pool. ``helpers`` are more such connections, only
    entered when the table is large enough to split (:func:`.lanes.plan`); one
    that cannot be had in time just means fewer lanes. At most
    ``AHEAD_CHUNKS`` chunks wait for the consumer and ``LANE_AHEAD_CHUNKS``
    per lane wait for the merge, so memory stays flat however large the table
    and however slow the client.
    """

    def __init__(self, connection: ConnectionSource, spec: ExportSpec, *, gzip: bool = False,
                 chunk_bytes: int = CHUNK_BYTES, helpers: Sequence[ConnectionSource] = (),
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
    def _hold(self, connection: ConnectionSource) -> Iterator[psycopg.Connection[Any]]:
        with connection as conn:
            with self._conn_lock:
                self._conns.append(conn)
            try:
                yield conn
            finally:
                with self._conn_lock:
                    self._conns.remove(conn)

    # --- the reader thread -------------------------------------------------------------

    def _produce(self) -> None:
        started = threading.Event()
        binary = is_binary(self.spec.format)

        def on_start() -> None:
            started.set()
            self._put(None)

        try:
            with contextlib.ExitStack() as stack:
                lanes = lane_plan.plan(self.spec, self.connection, self.helpers,
                                       lambda c: stack.enter_context(self._hold(c)))
                self.lanes = len(lanes)
                if len(lanes) == 1:
                    conn, statements = lanes[0]
                    for i, statement in enumerate(statements):
                        self.rows += copy_chunks(conn, statement, binary=binary,
                                                 chunk_bytes=self.chunk_bytes, emit=self._send,
                                                 on_start=on_start if i == 0 else None)
                else:
                    self.rows = lane_plan.merge(
                        lanes, binary=binary, chunk_bytes=self.chunk_bytes, send=self._send,
                        on_start=on_start, stop=self._stop, cancel=self._cancel,
                        name=f"export-{self.spec.resource.name}")
                for conn, _ in lanes:
                    if conn.info.transaction_status != pq.TransactionStatus.IDLE:
                        conn.execute(QUERIES["commit"])
            self.rows = record_count(self.rows, self.spec.format)
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
