"""Format detection (declared, by name, by content), the decompression bound, and the
reader chosen for each format."""

from __future__ import annotations

import gzip
import io

import pytest

from bulkport.errors import BadRequest, UnreadableFile
from bulkport.pipeline.decompress import open_decompressed
from bulkport.pipeline.formats import (
    Format,
    delimiter_from_name,
    format_from_content,
    format_from_name,
    parse_format,
    parse_import_format,
    sniff,
)
from bulkport.pipeline.sources import open_source

# --- detection ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "fmt"), [
    ("users.csv", Format.CSV), ("USERS.CSV", Format.CSV), ("users.tsv", Format.CSV),
    ("users.tab.gz", Format.CSV), ("a.ndjson", Format.NDJSON), ("a.jsonl.gz", Format.NDJSON),
    ("a.json", Format.JSON), ("a.JSON.GZ", Format.JSON), ("a.txt", None), ("a.gz", None),
    ("", None), (None, None),
])
def test_format_from_name(name: str | None, fmt: Format | None) -> None:
    assert format_from_name(name) is fmt


@pytest.mark.parametrize(("name", "tab"), [
    ("a.tsv", True), ("a.TAB", True), ("a.tsv.gz", True), ("a.csv", False),
    ("a.tsv.zip", False), (None, False),
])
def test_a_tab_separated_name_tells_the_delimiter(name: str | None, tab: bool) -> None:
    assert delimiter_from_name(name) == ("\t" if tab else None)


@pytest.mark.parametrize(("head", "fmt"), [
    (b'[{"id": "1"}]', Format.JSON),
    (b'\xef\xbb\xbf \r\n [\n{"id": "1"}', Format.JSON),          # BOM and blank space first
    (b'{"id": "1"}\n{"id": "2"}\n', Format.NDJSON),
    (b'{"id": "1"}', Format.NDJSON),                             # one line, one object
    (b'{\n  "id": "1"\n}\n', Format.JSON),                       # an object over lines
    (b"id,email\n1,a@b.co\n", Format.CSV),
    (b"\xef\xbb\xbfid;email\n", Format.CSV),
    (b"", Format.CSV),
])
def test_format_from_content(head: bytes, fmt: Format) -> None:
    assert format_from_content(head) is fmt


def test_a_declared_format_is_checked() -> None:
    assert parse_format("NDJSON") is Format.NDJSON
    assert parse_format(None) is None and parse_format("") is None
    with pytest.raises(BadRequest) as caught:
        parse_format("xml")
    assert caught.value.details["allowed"] == ["csv", "ndjson", "json"]


def test_tsv_is_csv_with_a_tab() -> None:
    assert parse_import_format("TSV") == (Format.CSV, "\t")
    assert parse_import_format("csv") == (Format.CSV, None)
    assert parse_import_format(None) == (None, None)
    with pytest.raises(BadRequest, match="use one of: csv, ndjson, json, tsv") as caught:
        parse_import_format("xls")
    assert caught.value.details["allowed"] == ["csv", "ndjson", "json", "tsv"]


def test_sniff_does_not_consume() -> None:
    stream = io.BytesIO(b"id,email\n1,a@b.co\n")
    stream.read(3)
    assert sniff(stream, 5) == b"email"
    assert stream.tell() == 3


def test_sniff_of_a_damaged_gzip_is_unreadable() -> None:
    damaged = gzip.compress(b"id,email\n")[:10] + b"not deflate data" * 4
    with pytest.raises(UnreadableFile, match="could not be decompressed"):
        sniff(open_decompressed(io.BytesIO(damaged)))


# --- the decompression bound -------------------------------------------------------------

PLAIN = b"id,email\n" + b"1,a@b.co\n" * 10_000  # 90,009 bytes


def test_a_plain_file_is_read_as_it_is() -> None:
    raw = io.BytesIO(PLAIN)
    assert open_decompressed(raw, max_bytes=10) is raw


def test_a_gzipped_file_is_inflated() -> None:
    stream = open_decompressed(io.BytesIO(gzip.compress(PLAIN)), max_bytes=len(PLAIN))
    assert stream.read() == PLAIN  # exactly at the bound: allowed


@pytest.mark.parametrize("how", ["read", "read_sized", "readline", "read1"])
def test_past_the_bound_the_file_is_unreadable(how: str) -> None:
    stream = open_decompressed(io.BytesIO(gzip.compress(PLAIN)), max_bytes=len(PLAIN) - 1)
    with pytest.raises(UnreadableFile, match="decompresses to more than 90008 bytes"):
        while True:
            chunk = {"read": lambda: stream.read(),
                     "read_sized": lambda: stream.read(4096),
                     "readline": lambda: stream.readline(),
                     "read1": lambda: stream.read1(4096)}[how]()
            if not chunk:
                break


def test_a_bomb_is_stopped_near_the_bound() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in about 64 KiB
    stream = open_decompressed(io.BytesIO(bomb), max_bytes=1 << 20)
    with pytest.raises(UnreadableFile):
        stream.read()
    # one unbounded read() inflates no more than the bound allows, plus one step
    assert stream.tell() <= (1 << 20) + 1


def test_without_a_bound_a_gzip_reads_whole() -> None:
    stream = open_decompressed(io.BytesIO(gzip.compress(PLAIN)))
    assert stream.read() == PLAIN


# --- one reader per format ---------------------------------------------------------------


def test_each_format_has_its_reader() -> None:
    csv = open_source(io.BytesIO(b'id;email\n1;a@b.co\n"2";b@c.co\n'), Format.CSV,
                      max_line_bytes=1000)
    assert (csv.columns, csv.delimiter) == (["id", "email"], ";")
    # a plain line stays whole (the prepare stage splits it); a quoted one is split here
    assert [r.data for r in csv.records] == ["1;a@b.co", ["2", "b@c.co"]]
    ndjson = open_source(io.BytesIO(b'{"id": "1"}\n\n[1]\n'), Format.NDJSON,
                         max_line_bytes=1000)
    assert (ndjson.columns, ndjson.delimiter) == (None, None)
    records = list(ndjson.records)
    assert [(r.row, r.data) for r in records] == [(1, {"id": "1"}), (2, None)]
    assert records[1].malformed == "the line is not a JSON object"
    array = open_source(io.BytesIO(b'[{"id": "1"}, {"id": "2"}]'), Format.JSON,
                        max_line_bytes=1000)
    assert [r.data for r in array.records] == [{"id": "1"}, {"id": "2"}]


def test_a_json_file_must_hold_objects() -> None:
    source = open_source(io.BytesIO(b'"just a string"'), Format.JSON, max_line_bytes=1000)
    with pytest.raises(UnreadableFile, match="array of objects"):
        list(source.records)
