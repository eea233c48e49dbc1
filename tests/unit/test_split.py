"""The plan pass cuts files where the readers see record boundaries, and counts as they do.

For many chunk sizes, the records read chunk by chunk (each chunk's byte range,
numbered after its ``first_row``) are exactly the records of one stream: same
rows, same values, same malformed records.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from bulkport.pipeline.chunked import Holder, read_chunk
from bulkport.pipeline.csvreader import read_csv
from bulkport.pipeline.headers import match_columns
from bulkport.pipeline.keyhash import KeyHasher
from bulkport.pipeline.ndjson import read_ndjson
from bulkport.pipeline.split import plan
from bulkport.pipeline.types import RecordShape, ValidRecord
from bulkport.resources import get_resource
from bulkport.storage import LocalStorage

USERS = get_resource("users")
LIMIT = 4096

CSV_CASES = {
    "plain": b"id,email,name,role\n" + b"".join(
        b"u%d,u%d@x.org,Name %d,admin\n" % (i, i, i) for i in range(40)),
    "quoted newlines and quotes": b"id,email,name,role\n" + b"".join(
        b'u%d,u%d@x.org,"Line one\nline ""two""\n\nthree",reader\n' % (i, i)
        if i % 3 == 0 else b'u%d,"u%d@x.org",plain %d,admin\n' % (i, i, i)
        for i in range(30)),
    "blank lines, CRLF, no trailing newline": b"id,email,name,role\r\n\r\n" + b"".join(
        b"u%d,u%d@x.org,N,admin\r\n%s" % (i, i, b"\r\n\n" if i % 4 == 0 else b"")
        for i in range(30)) + b"last,last@x.org,N,admin",
    "wrong widths and bad bytes": b"id,email,name,role\n" + b"".join(
        b"u%d,u%d@x.org,N\n" % (i, i) if i % 5 == 0 else
        b"u%d,u\xff%d@x.org,N,admin\n" % (i, i) if i % 7 == 0 else
        b'u%d,"a,b",x,"y"\n' % i if i % 3 == 0 else
        b"u%d,u%d@x.org,N,admin\n" % (i, i) for i in range(40)),
    "BOM and semicolons": b"\xef\xbb\xbfid;email;name;role\n" + b"".join(
        b'u%d;u%d@x.org;"Doe; J";admin\n' % (i, i) for i in range(30)),
    "quote inside an unquoted field": b"id,email,name,role\n" + b"".join(
        b'u%d,u%d@x.org,O"Brien,admin\n' % (i, i) for i in range(30)),
}

NDJSON_CASES = {
    "plain": b"".join(b'{"id": "u%d", "email": "u%d@x.org"}\n' % (i, i) for i in range(40)),
    "blank lines, BOM, bad lines, no trailing newline": b"\xef\xbb\xbf" + b"".join(
        b'{"id": "u%d"}\n%s' % (i, b"\n  \n" if i % 3 == 0 else b"") if i % 7 else
        b"not json\n" if i % 2 else b"[1, 2]\r\n" for i in range(40)) + b'{"id": "end"}',
}


def _store(tmp_path: Path, data: bytes) -> tuple[LocalStorage, str]:
    storage = LocalStorage(tmp_path / "up")
    return storage, storage.save(iter([data]), max_bytes=1 << 30).key


def _shape(rec: Any) -> tuple[Any, ...]:
    return rec.row, rec.data, rec.original, rec.malformed


def _one_stream_csv(data: bytes) -> tuple[list[str], str, list[Any]]:
    columns, d, records = read_csv(io.BytesIO(data), LIMIT)
    return columns, d, [_shape(r) for r in records]


@pytest.mark.parametrize("name", sorted(CSV_CASES))
def test_csv_chunks_read_as_one_stream(tmp_path: Path, name: str) -> None:
    data = CSV_CASES[name]
    columns, d, expected = _one_stream_csv(data)
    fields = match_columns(columns, USERS, None)
    storage, key = _store(tmp_path, data)
    split_counts = set()
    for chunk_bytes in range(1, len(data) + 2, 7):
        with storage.open_read(key) as f:
            found = plan(f, USERS, fmt="csv", chunk_bytes=chunk_bytes, max_line_bytes=LIMIT,
                         delimiter=d, fields=fields)
        if found is None:  # fewer than two chunks
            assert chunk_bytes > len(data) // 3
            continue
        split_counts.add(len(found.chunks))
        assert found.records == len(expected)
        got = []
        for c in found.chunks:
            with storage.open_read(key, c.start_byte, c.end_byte) as raw:
                part = [_shape(r) for r in read_chunk(
                    raw, fmt="csv", columns=columns, delimiter=d, first_row=c.first_row,
                    max_line_bytes=LIMIT)]
            assert part, "every chunk holds a record"
            got += part
        assert got == expected, chunk_bytes
        assert found.chunks[-1].end_byte == len(data)
    assert len(split_counts) > 3  # many different cuts were checked


@pytest.mark.parametrize("name", sorted(NDJSON_CASES))
def test_ndjson_chunks_read_as_one_stream(tmp_path: Path, name: str) -> None:
    data = NDJSON_CASES[name]
    expected = [_shape(r) for r in read_ndjson(io.BytesIO(data), LIMIT)]
    storage, key = _store(tmp_path, data)
    checked = 0
    for chunk_bytes in range(1, len(data) + 2, 5):
        with storage.open_read(key) as f:
            found = plan(f, USERS, fmt="ndjson", chunk_bytes=chunk_bytes, max_line_bytes=LIMIT)
        if found is None:
            continue
        got = []
        for c in found.chunks:
            with storage.open_read(key, c.start_byte, c.end_byte) as raw:
                got += [_shape(r) for r in read_chunk(
                    raw, fmt="ndjson", columns=None, delimiter=None, first_row=c.first_row,
                    max_line_bytes=LIMIT)]
        assert got == expected, chunk_bytes
        checked += 1
    assert checked > 10


@pytest.mark.parametrize("data", [
    b"id,email,name,role\nu1,a@x.org,N,admin\ru2,b@x.org,N,admin\n" * 20,  # bare CR
    b"id,email,name,role\n" + b"u1,a@x.org," + b"n" * (LIMIT + 10) + b",admin\n" * 20,
    b'"id",email,name,role\nu1,a@x.org,N,admin\n' * 20,  # quoted header
])
def test_odd_files_are_not_split(tmp_path: Path, data: bytes) -> None:
    columns, d, _ = _one_stream_csv(data)
    storage, key = _store(tmp_path, data)
    with storage.open_read(key) as f:
        assert plan(f, USERS, fmt="csv", chunk_bytes=10, max_line_bytes=LIMIT, delimiter=d,
                    fields=match_columns(columns, USERS, None)) is None


def test_values_in_two_chunks_are_hot(tmp_path: Path) -> None:
    rows = [b"id,email,name,role\n"]
    rows += [b"a%d,a%d@x.org,N,admin\n" % (i, i) for i in range(10)]  # chunk 0
    rows += [b"b%d,b%d@x.org,N,admin\n" % (i, i) for i in range(10)]  # chunk 1
    rows[15] = b"b4,  A3@X.org ,N,admin\n"  # a3's email (case, spaces) in chunk 1
    rows[12] = b"a1,other@x.org,N,admin\n"  # a1's id again, in chunk 1
    rows[3] = b"a2,a1@x.org,N,admin\n"  # a repeat within chunk 0 only: not hot
    data = b"".join(rows)
    storage, key = _store(tmp_path, data)
    columns, d, _ = _one_stream_csv(data)
    with storage.open_read(key) as f:
        found = plan(f, USERS, fmt="csv", chunk_bytes=len(b"".join(rows[1:11])),
                     max_line_bytes=LIMIT, delimiter=d,
                     fields=match_columns(columns, USERS, None))
    assert found is not None and len(found.chunks) == 2
    hasher = KeyHasher(USERS)
    get = {"email": "a3@x.org"}.get
    assert set(found.hot) == {hasher.hashes({"email": "a3@x.org"}.get)[0],
                              hasher.hashes({"id": "a1"}.get)[0]}
    assert hasher.hashes(get) == hasher.hashes({"email": " A3@x.ORG"}.get)


def test_holder_holds_hot_values_and_their_later_sharers() -> None:
    hasher = KeyHasher(USERS)
    shape = RecordShape(None, ",", {n: i for i, n in enumerate(USERS.column_names)})

    def rec(row: int, rid: str | None, email: str) -> ValidRecord:
        values: list[str | None] = [None] * len(USERS.column_names)
        values[0], values[1] = rid, email
        return ValidRecord(row, values, {}, shape)

    hot = frozenset(hasher.hashes({"email": "hot@x.org"}.get))
    holder = Holder(USERS, hot)
    records = [rec(1, "a", "a@x.org"), rec(2, "b", "HOT@x.org"), rec(3, "b", "c@x.org"),
               rec(4, None, "C@x.org"), rec(5, "d", "d@x.org")]
    keep, held = holder.split(records)
    # 2 is hot; 3 shares its id; 4 shares 3's email (closure); 1 and 5 share nothing.
    assert [r.row for r in held] == [2, 3, 4]
    assert [r.row for r in keep] == [1, 5]
    keep, held = holder.split([rec(6, "e", "c@x.org"), rec(7, "f", "f@x.org")])
    assert ([r.row for r in keep], [r.row for r in held]) == ([7], [6])
