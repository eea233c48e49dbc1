"""JSON arrays are read element by element: a bad element costs one record, never the file.

An element longer than ``BULKPORT_MAX_LINE_BYTES`` is skipped with bounded
memory (a streaming parser hands over a whole string value at once: a 300 MB
value took the worker to 961 MB); a lone surrogate escape or a number beyond a
double is one ``malformed_record``, and the records around it load.
"""

from __future__ import annotations

import gzip
import io
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkport.config import Settings
from bulkport.pipeline import decompress, formats, sources
from bulkport.pipeline.stage import Stager, prepare
from bulkport.pipeline.types import Mode
from bulkport.pipeline.validate import RecordValidator
from bulkport.resources import RESOURCES
from tests.conftest import get_job, run_jobs, submit_import

GOOD = b'{"email": "g@example.com", "name": "Good", "role": "admin"}'
VALUE_BYTES = 80 * 1024 * 1024
MAX_LINE = 1024 * 1024
#: Peak of Python allocations allowed while reading the file (the value is 80 MB).
MAX_PEAK_BYTES = 24 * 1024 * 1024


def _huge_value_file(path: Path) -> Path:
    """Gzipped: a good record, one whose name is 80 MB of "a", another good one."""
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(b"[" + GOOD + b',\n{"email": "j@example.com", "role": "admin", "name": "')
        chunk = b"a" * (1024 * 1024)
        for _ in range(VALUE_BYTES // len(chunk)):
            f.write(chunk)
        f.write(b'"},\n' + GOOD.replace(b"g@", b"h@") + b"]")
    return path


def test_huge_value_is_one_malformed_record_in_bounded_memory(tmp_path: Path) -> None:
    path = _huge_value_file(tmp_path / "huge.json.gz")
    with path.open("rb") as raw:
        stream = decompress.open_decompressed(raw)
        formats.sniff(stream)
        tracemalloc.start()
        try:
            _, records = sources.read_records(stream, formats.Format.JSON,
                                              max_line_bytes=MAX_LINE)
            batch = prepare(RecordValidator(RESOURCES["users"]),
                            Stager(RESOURCES["users"], Mode.INSERT), records)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < MAX_PEAK_BYTES, f"reading took {peak >> 20} MiB"
    assert [r[1] for r in batch.rows] == ["g@example.com", "h@example.com"]
    [rejected] = batch.rejected
    assert rejected.row == 2
    assert [e.code for e in rejected.errors] == ["malformed_record"]
    assert str(MAX_LINE) in rejected.errors[0].message


def _import(url: str, settings: Settings, path: Path) -> tuple[dict[str, Any], list[Any]]:
    job_id = submit_import(url, settings, path, "users")
    run_jobs(url, settings)
    job = get_job(url, job_id)
    from bulkport import db

    with db.connect(url, autocommit=True) as c:
        errors = c.execute("SELECT row, errors FROM import_errors WHERE job_id = %s ORDER BY row",
                           (job_id,)).fetchall()
    return job, errors


@pytest.mark.parametrize("bad", [
    b'{"email": "a@example.com", "name": "\\udfff", "role": "admin"}',
    b'{"email": "a@example.com", "name": "x\\udfffy", "role": "admin"}',
    b'{"email": "a@example.com", "name": "\\ud800", "role": "admin"}',
    b'{"email": "a@example.com", "name": "\\udfff\\ud800", "role": "admin"}',
    b'{"email": "a@example.com", "\\udfff": "x", "role": "admin"}',
    b'{"email": "a@example.com", "name": "Ann", "role": "admin", "active": ' + b"9" * 400 + b"}",
])
def test_bad_element_is_one_malformed_record(clean_db: str, settings: Settings, tmp_path: Path,
                                             bad: bytes) -> None:
    path = tmp_path / "users.json"
    path.write_bytes(b"[" + GOOD + b",\n" + bad + b",\n" + GOOD.replace(b"g@", b"h@") + b"]")
    job, errors = _import(clean_db, settings, path)
    assert job["status"] == "completed_with_errors", job["failure_reason"]
    assert (job["successful_records"], job["error_records"]) == (2, 1)
    [(row, entries)] = errors
    assert row == 2 and [e["code"] for e in entries] == ["malformed_record"]


def test_huge_value_through_the_worker(clean_db: str, settings: Settings, tmp_path: Path) -> None:
    job, errors = _import(clean_db, settings, _huge_value_file(tmp_path / "huge.json.gz"))
    assert (job["status"], job["successful_records"], job["error_records"]) == (
        "completed_with_errors", 2, 1)
    assert [(r, [e["code"] for e in es]) for r, es in errors] == [(2, ["malformed_record"])]


def test_elements_split_anywhere_across_reads(tmp_path: Path) -> None:
    """Element boundaries, strings and escapes cut by every chunk boundary read the same."""
    records = [{"email": f"u{i}@example.com", "name": 'q"\\' * (i % 5) + "é" * i,
                "tags": ["a", "[b]"], "n": {"deep": [[i]]}} for i in range(60)]
    data = orjson.dumps(records)
    expected = [orjson.loads(orjson.dumps(r)) for r in records]

    class Trickle(io.RawIOBase):
        def __init__(self, size: int) -> None:
            self.data, self.size, self.at = data, size, 0

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            out = self.data[self.at:self.at + self.size]
            self.at += len(out)
            return out

    from bulkport.pipeline.jsonarray import read_json

    for size in (1, 2, 3, 7, 64, 1000):
        got = [r.data for r in read_json(Trickle(size), MAX_LINE, in_array=True)]  # type: ignore[arg-type]
        assert got == expected, size
