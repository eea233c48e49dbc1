"""The rejected records of an import as a CSV download (``/errors?format=csv``).

People open this file in spreadsheets more than any other, so every cell that a
spreadsheet would run as a formula is neutralised with the rule of the CSV
export (:mod:`bulkport.sql.exporting`): one more leading apostrophe before a
cell that starts, after any apostrophes, with ``= + - @``, and here also with a
tab or a carriage return (which some spreadsheets skip before reading a
formula). The CSV importer removes exactly one apostrophe before ``= + - @`` in
text and email columns, so the download imports back as uploaded there; other
cells keep it (docs/imports.md). A valid id in an id or reference column is
written as is, as in the export: its alphabet cannot form a function call.

Columns: the upload's header (the resource's columns for NDJSON/JSON), ``_row``
and ``_errors``; for NDJSON/JSON jobs also ``_raw``, which holds a record that
was not an object (or not JSON) as uploaded, instead of spreading it across
the columns.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from bulkport.records import ImportJob
from bulkport.resources import get_resource
from bulkport.resources.base import ID_PATTERN, Kind

#: A cell a spreadsheet may read as a formula (after any leading apostrophes).
FORMULA_START = re.compile(r"'*[-=+@\t\r]")
#: Bytes of CSV buffered before they are handed to the response.
FLUSH_BYTES = 64 * 1024


def neutralise(cell: str) -> str:
    """``cell`` with one more leading apostrophe when a spreadsheet could run it."""
    if cell and FORMULA_START.match(cell):
        return "'" + cell
    return cell


def csv_download(job: ImportJob, rejects: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """The CSV bytes of ``rejects`` (stored ``{"row", "record", "errors"}`` rows) of ``job``."""
    resource = get_resource(job.resource)
    columns: list[str] = job.columns or resource.column_names
    from_csv = job.columns is not None
    verbatim_ids = {i for i, c in enumerate(columns) if resource.has_field(c)
                    and resource.field(c).kind in (Kind.ID, Kind.REF)}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([*columns, "_row", "_errors", *([] if from_csv else ["_raw"])])
    for r in rejects:
        record = r["record"] if isinstance(r["record"], dict) else {}
        raw = record.get("_raw")
        if from_csv and isinstance(raw, list):  # a CSV row of the wrong width, as cells
            cells = [_cell(v) for v in raw[: len(columns)]]
            cells += [""] * (len(columns) - len(cells))
        else:
            cells = [_cell(record.get(c)) for c in columns]
        cells = [c if i in verbatim_ids and ID_PATTERN.fullmatch(c) else neutralise(c)
                 for i, c in enumerate(cells)]
        extra = [] if from_csv else [neutralise(_cell(raw))]
        writer.writerow([*cells, r["row"], ";".join(e["code"] for e in r["errors"]), *extra])
        if buf.tell() > FLUSH_BYTES:
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    return str(value)
