"""A decompressed UTF-8 stream as records: the reader of its format.

Every reader is a stream: memory stays bounded by the longest accepted line
(``max_line_bytes``), whatever the file size. A record that cannot be parsed is
yielded as a :class:`RawRecord` with ``malformed`` set; a file that cannot be
read at all raises :class:`UnreadableFile`. The readers:
:mod:`~bulkport.pipeline.csvreader`, :mod:`~bulkport.pipeline.ndjson` and
:mod:`~bulkport.pipeline.jsonarray`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from bulkport.pipeline.csvreader import Scorer, guard, read_csv
from bulkport.pipeline.formats import Format
from bulkport.pipeline.jsonarray import read_json_file
from bulkport.pipeline.ndjson import read_ndjson
from bulkport.pipeline.types import RawRecord


@dataclass
class Source:
    """A file opened for reading: its CSV header and delimiter (None for JSON), its records."""

    columns: list[str] | None
    delimiter: str | None
    records: Iterator[RawRecord]


def open_source(stream: IO[bytes], fmt: Format, *, max_line_bytes: int,
                delimiter: str | None = None, score: Scorer | None = None) -> Source:
    """The records of a decompressed UTF-8 stream (CSV: ``delimiter`` or detected)."""
    if fmt is Format.CSV:
        columns, found, records = read_csv(stream, max_line_bytes, delimiter, score)
        return Source(columns, found, records)
    if fmt is Format.NDJSON:
        return Source(None, None, guard(read_ndjson(stream, max_line_bytes)))
    return Source(None, None, guard(read_json_file(stream, max_line_bytes)))


def read_records(
    stream: IO[bytes], fmt: Format, *, max_line_bytes: int
) -> tuple[list[str] | None, Iterator[RawRecord]]:
    """Return ``(csv_columns_or_None, records)`` for a decompressed comma/auto stream."""
    source = open_source(stream, fmt, max_line_bytes=max_line_bytes)
    return source.columns, source.records
