"""An export written to a file (the export jobs), through the one reader.

:func:`write_export` runs the export's statement on a sync connection and
writes what :func:`~.reader.copy_chunks` gathers, encoded, to a binary file.
A job must stop within about a second when it is cancelled or its worker is
asked to stop, so between chunks it polls ``keep_going``; when that says no,
:class:`~.reader.Stopped` leaves the COPY, which cancels the query.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO, Any

import psycopg

from bulkport.pipeline.export.encoder import Encoder
from bulkport.pipeline.export.reader import (
    CHUNK_BYTES,
    Stopped,
    copy_chunks,
    is_binary,
    record_count,
)
from bulkport.pipeline.export_spec import ExportSpec
from bulkport.sql.exporting import SESSION_SETUP, export_statement

__all__ = ["Stopped", "write_export"]


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
    written = 0
    next_check = time.monotonic() + check_every_seconds

    def emit(chunk: bytes) -> None:
        nonlocal written, next_check
        written += out.write(encoder.feed(chunk))
        if time.monotonic() >= next_check:
            if not keep_going():
                raise Stopped()  # leaving the copy cancels the query
            next_check = time.monotonic() + check_every_seconds

    conn.execute(SESSION_SETUP)
    rows = copy_chunks(conn, statement, binary=is_binary(spec.format), chunk_bytes=CHUNK_BYTES,
                       emit=emit)
    written += out.write(encoder.end())
    return record_count(rows, spec.format), written
