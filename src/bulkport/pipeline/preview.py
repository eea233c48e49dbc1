"""The preview of an import: how a file would be read, and what its first records become.

:func:`preview` reads only the beginning of a file (at most ``limit`` records,
:data:`PREVIEW_INPUT_BYTES` of input and :data:`PREVIEW_SECONDS` of reading)
with the importer's own code: :func:`bulkport.pipeline.reading.open_reading`,
then the import's validate, stage and load stages on those records, in a transaction
that is rolled back, so duplicates and references are checked as a
``dry_run`` checks them and nothing is written. Usable without the web server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import IO, Any

import psycopg

from bulkport.errors import UnreadableFile
from bulkport.pipeline import headers
from bulkport.pipeline.load import Loader, load_rounds
from bulkport.pipeline.reading import open_reading
from bulkport.pipeline.stage import Stager, insert_defaults, prepare
from bulkport.pipeline.types import Mode, RawRecord, Rejected, StagedRound
from bulkport.pipeline.validate import RecordValidator
from bulkport.resources.base import NULL, Kind, Resource
from bulkport.resources.compile import copy_unescape

#: Records previewed by default, and at most.
DEFAULT_LIMIT = 20
MAX_LIMIT = 1000
#: Input read at most (bytes of the stored file, compressed for .gz files).
PREVIEW_INPUT_BYTES = 4 * 1024 * 1024
#: Reading stops after this long, whatever it has (seconds).
PREVIEW_SECONDS = 2.0


def preview(raw: IO[bytes], stream: IO[bytes], resource: Resource, conn: psycopg.Connection[Any],
            *, mode: str, declared_format: str | None, file_name: str | None,
            delimiter: str | None, encoding: str | None, column_map: dict[str, str] | None,
            limit: int = DEFAULT_LIMIT, max_line_bytes: int,
            truncated: bool = False) -> dict[str, Any]:
    """The preview document (:class:`bulkport.api.schemas.ImportPreview`).

    ``raw`` is the stored file (its position bounds the input read), ``stream``
    the same decompressed; ``truncated`` says that ``raw`` holds only the file's
    beginning (its last line may be cut). A file that cannot be read raises as
    an import would fail: :class:`~bulkport.errors.UnreadableFile`.
    """
    reading = open_reading(stream, resource, declared_format=declared_format,
                           file_name=file_name, delimiter=delimiter, encoding=encoding,
                           column_map=column_map, max_line_bytes=max_line_bytes)
    source = reading.source
    records, complete = _first(source.records, raw, min(limit, MAX_LIMIT), truncated)
    columns = source.columns
    if columns is None:  # JSON: the keys seen, in order of appearance
        columns = list(dict.fromkeys(k for r in records if isinstance(r.data, dict)
                                     for k in r.data))
        fields = [headers.field_for(c, resource, column_map) for c in columns]
    else:
        fields = list(reading.fields or [])
    missing = headers.missing_required(fields, resource)
    mapped = column_map or {}
    with conn.transaction(force_rollback=True):
        loader = Loader(conn, resource, Mode(mode).value)
        validator = RecordValidator(resource, source.columns, fields=reading.fields,
                                    column_map=column_map, delimiter=source.delimiter or ",")
        stager = Stager(resource, Mode(mode), insert_defaults(conn, resource))
        batch = prepare(validator, stager, records)
        rounds: list[StagedRound] = []
        rejected = batch.rejected + load_rounds(loader, stager, batch, rounds)
    return {
        "resource": resource.name, "mode": Mode(mode).value, "format": reading.format.value,
        "delimiter": source.delimiter, "encoding": reading.encoding,
        "encoding_from_bom": reading.bom, "encoding_hint": reading.encoding_hint,
        "columns": [{"column": c, "field": f,
                     "matched_by": None if f is None else
                     "column_map" if c in mapped or headers.normalise(c) in
                     {headers.normalise(k) for k in mapped} else "name"}
                    for c, f in zip(columns, fields, strict=True)],
        "unmapped_columns": [c for c, f in zip(columns, fields, strict=True) if f is None],
        "missing_required_fields": missing,
        "suggested_column_map": headers.suggest_map(columns, fields, resource, missing),
        "fields": [{"name": f.name, "required": f.required, "kind": f.kind.value}
                   for f in resource.fields],
        "records": _records(resource, rounds, rejected),
        "records_read": len(records), "limit": min(limit, MAX_LIMIT),
        "end_of_file": complete,
    }


def _first(records: Iterator[RawRecord], raw: IO[bytes], limit: int, truncated: bool
           ) -> tuple[list[RawRecord], bool]:
    """Up to ``limit`` records, within the input and time bounds; whether the file ended.

    In a truncated copy the record at the cut is incomplete: it is left out.
    """
    start = raw.tell()
    deadline = time.monotonic() + PREVIEW_SECONDS
    out: list[RawRecord] = []
    try:
        for rec in records:
            out.append(rec)
            if (len(out) > limit or raw.tell() - start > PREVIEW_INPUT_BYTES
                    or time.monotonic() > deadline):
                break
        else:
            if not truncated:
                return out, True
    except UnreadableFile:
        if not truncated:  # a gzip cut by the preview's own limit is not damaged
            raise
    return out[:limit] if len(out) > limit else out[:-1] if truncated else out, False


def _records(resource: Resource, rounds: list[StagedRound], rejected: list[Rejected]
             ) -> list[dict[str, Any]]:
    """Each record in file order: as it would be stored, or its errors."""
    failed = {r.row: r for r in rejected}
    out: dict[int, dict[str, Any]] = {}
    for current in rounds:
        for rec in current.records:
            row = rec.row
            if row not in failed:
                out[row] = {"row": row, "valid": True, "errors": [],
                            "record": _stored(resource, rec.values),
                            "original": rec.original}
    for row, rej in failed.items():
        out[row] = {"row": row, "valid": False, "record": None, "original": rej.original,
                    "errors": [e.entry() for e in rej.errors]}
    return [out[row] for row in sorted(out)]


def _stored(resource: Resource, values: list[str | None]) -> dict[str, Any]:
    """A staged row (COPY text) as JSON values: NULL -> null, booleans as booleans."""
    record: dict[str, Any] = {}
    for f, value in zip(resource.fields, values, strict=False):
        if value is None or value == NULL:
            record[f.name] = None
        elif f.kind is Kind.BOOL:
            record[f.name] = value in ("t", "true")  # the fast path, or a default
        else:
            record[f.name] = copy_unescape(value)
    return record
