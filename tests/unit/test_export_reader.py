"""The binary COPY framing the export reader decodes, and its record counts."""

from __future__ import annotations

import psycopg
import pytest

from bulkport.pipeline.export.reader import first_json_row, is_binary, record_count
from bulkport.pipeline.formats import Format
from bulkport.sql.exporting import BINARY_HEADER, BINARY_TRAILER


def _row(value: bytes) -> bytes:
    """One binary COPY row of one column: field count 1, the value's length, the value."""
    return (1).to_bytes(2, "big") + len(value).to_bytes(4, "big") + value


def test_first_message_is_the_header_then_a_row() -> None:
    assert first_json_row(BINARY_HEADER + _row(b'{"id":"a"}')) == b'{"id":"a"}\n'


def test_first_message_of_an_empty_export_is_the_header_then_the_trailer() -> None:
    assert first_json_row(BINARY_HEADER + BINARY_TRAILER) == b""


def test_a_stream_without_the_binary_header_is_refused() -> None:
    with pytest.raises(psycopg.DataError, match="binary COPY header"):
        first_json_row(b"id,name\n")


def test_json_formats_read_binary_and_csv_counts_no_header() -> None:
    assert is_binary(Format.NDJSON) and is_binary(Format.JSON) and not is_binary(Format.CSV)
    assert record_count(11, Format.CSV) == 10
    assert record_count(11, Format.NDJSON) == record_count(11, Format.JSON) == 11
