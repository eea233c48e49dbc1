"""Records into batches, and batches prepared ahead of the database.

Shared by the one-stream importer (:mod:`bulkport.pipeline.importer`) and the
chunks of a split import (:mod:`bulkport.pipeline.chunked`): both read records,
cut them into batches bounded by count and by input bytes, and prepare the next
batch in a thread while the current one loads (psycopg releases the GIL while it
waits on PostgreSQL, so Python and the database work at the same time).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from itertools import islice
from typing import IO

from bulkport.pipeline.types import PreparedBatch, RawRecord

#: Input read per batch at most (bytes of the stored file; compressed for .gz files).
BATCH_INPUT_BYTES = 4 * 1024 * 1024
#: Records taken at a time while filling a batch, between checks of the bytes read.
BATCH_SIZE_STEP = 500
#: Prepared batches buffered ahead of the database (bounds memory).
PREFETCH_BATCHES = 1


def take_batch(records: Iterator[RawRecord], batch_size: int, raw: IO[bytes]) -> list[RawRecord]:
    """The next batch: ``batch_size`` records, or fewer once BATCH_INPUT_BYTES were read.

    Wide records (long article bodies) would otherwise make a batch, and the
    memory it holds, many times larger than one of users.
    """
    start = raw.tell()
    chunk: list[RawRecord] = []
    while True:
        part = list(islice(records, min(BATCH_SIZE_STEP, batch_size - len(chunk))))
        chunk += part
        if (len(part) < BATCH_SIZE_STEP or len(chunk) >= batch_size
                or raw.tell() - start >= BATCH_INPUT_BYTES):
            return chunk


def prefetch(batches: Iterator[PreparedBatch]) -> Iterator[PreparedBatch]:
    """Run ``batches`` in a thread, PREFETCH_BATCHES ahead of the consumer."""
    q: queue.Queue[PreparedBatch | BaseException | None] = queue.Queue(PREFETCH_BATCHES)
    stop = threading.Event()

    def produce() -> None:
        try:
            for b in batches:
                if stop.is_set():
                    return
                q.put(b)
            q.put(None)
        except BaseException as exc:
            q.put(exc)

    thread = threading.Thread(target=produce, name="import-parse", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                q.get_nowait()
        thread.join(timeout=5)
