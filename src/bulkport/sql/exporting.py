"""Export statements, derived from a :class:`Resource` and an export request.

PostgreSQL renders every byte of an export: the statement is one
``COPY (SELECT …) TO STDOUT`` whose rows are already NDJSON lines or CSV
records, so Python only forwards buffers. COPY takes no bind parameters, so
filter values are quoted with :class:`psycopg.sql.Literal` and names with
:class:`psycopg.sql.Identifier`; no user input is ever formatted into SQL.

Rendering (identical in every format, so that an export imports back as is):

* timestamps: ISO-8601 in UTC with ``Z``, fractional seconds only when the
  value has them (``2024-01-01T00:00:00Z``, ``2024-01-01T00:00:00.5Z``);
* booleans: ``true`` / ``false``; tags: a JSON array (``["a","b"]``);
* NDJSON: one ``row_to_json`` object per line; nulls are ``null``;
* CSV: RFC 4180 quoting by PostgreSQL's CSV writer (only cells that need it
  are quoted), a header row, nulls as empty cells, and formula neutralisation:
  a free-text cell starting with ``= + - @`` (after any leading apostrophes)
  gets one more leading ``'``; the CSV importer removes exactly one, so the
  round trip is lossless (:data:`bulkport.resources.base.FORMULA_ESCAPED`).

NDJSON lines travel in ``FORMAT binary``: one ``json`` column per row, whose
binary form is its text, so PostgreSQL neither escapes nor scans it; the
reader strips the 6-byte row prefix and adds the newline
(:mod:`bulkport.pipeline.export.reader`). That is ~8% less work for PostgreSQL
than text or CSV output of the same rows.
Rows are read in primary-key order through the ``id`` index: no OFFSET, no
pagination round trips. A large export may be split into id ranges read by
several connections at once (:mod:`bulkport.pipeline.export.lanes`): the range
boundaries come from a block sample of the table (:func:`split_points`), and
every connection reads in one shared snapshot (:data:`BEGIN_SNAPSHOT`,
``pg_export_snapshot()``), so the result is the same as one statement's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal as Lit

from psycopg import sql

from bulkport.resources.base import FORMULA_KINDS, Kind, Resource

#: Session settings the rendering depends on (``timestamp::text`` follows DateStyle).
SESSION_OPTIONS = "-c TimeZone=UTC -c DateStyle=ISO,YMD"
SESSION_SETUP = sql.SQL("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'")

_NDJSON_COPY = sql.SQL("(FORMAT binary)")
#: Start of a binary COPY stream: signature, flags, header extension length (19 bytes).
BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
#: Per-row prefix of a one-column binary row: field count 1, then the value's length.
ROW_PREFIX_BYTES = 6
#: End of a binary COPY stream: field count -1.
BINARY_TRAILER = b"\xff\xff"
_CSV_COPY = sql.SQL("(FORMAT csv, HEADER)")
_CSV_COPY_NO_HEADER = sql.SQL("(FORMAT csv)")

#: The transaction every connection of a split export reads in.
BEGIN_SNAPSHOT = sql.SQL("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
EXPORT_SNAPSHOT = sql.SQL("SELECT pg_export_snapshot()")

#: An id range of a split export: ``(first id included, first id excluded)``, open
#: ended where ``None``.
IdRange = tuple[str | None, str | None]


@dataclass(frozen=True)
class Condition:
    """One filter of an export: ``field op value(s)``, already validated and typed."""

    field: str
    op: Lit["in", ">=", "<=", "<", "contains"]
    values: tuple[str | bool | datetime, ...]


def _timestamp(col: sql.Composable) -> sql.Composable:
    # ISO output of a timestamp is "YYYY-MM-DD HH:MI:SS[.ffffff]": replace the
    # space, add the zone. ~3x cheaper in PostgreSQL than to_char.
    return sql.SQL("replace(({} AT TIME ZONE 'UTC')::text, ' ', 'T') || 'Z'").format(col)


def _neutralised(col: sql.Composable) -> sql.Composable:
    # ascii() reads the first character without building a substring; the regex
    # only runs for cells that start with an apostrophe.
    return sql.SQL(
        "CASE WHEN ascii({c}) IN (61, 43, 45, 64) OR (ascii({c}) = 39 AND {c} ~ '^''+[-=+@]') "
        "THEN '''' || {c} ELSE {c} END"
    ).format(c=col)


def column_expr(resource: Resource, name: str, fmt: str) -> sql.Composable:
    """The SELECT expression rendering one field for ``fmt`` (``ndjson``, ``csv``, ``json``)."""
    f = resource.field(name)
    col = sql.SQL("x.{}").format(sql.Identifier(name))
    if f.kind is Kind.TIMESTAMP:
        return _timestamp(col)
    if fmt != "csv":
        return col  # row_to_json renders text, booleans and arrays natively
    if f.kind is Kind.BOOL:
        return sql.SQL("{}::text").format(col)
    if f.kind is Kind.TAGS:
        return sql.SQL("array_to_json({})::text").format(col)
    if f.kind in FORMULA_KINDS:
        return _neutralised(col)
    return col


def where_clause(resource: Resource, conditions: Sequence[Condition]) -> sql.Composable:
    parts: list[sql.Composable] = []
    for c in conditions:
        col = sql.SQL("x.{}").format(sql.Identifier(c.field))
        if c.op == "contains":
            parts.append(sql.SQL("{} @> {}::text[]").format(col, sql.Literal(list(c.values))))
        elif c.op == "in" and len(c.values) == 1:
            parts.append(sql.SQL("{} = {}").format(col, sql.Literal(c.values[0])))
        elif c.op == "in":
            parts.append(sql.SQL("{} IN ({})").format(
                col, sql.SQL(", ").join(sql.Literal(v) for v in c.values)))
        else:  # a range: psycopg renders a datetime as '…'::timestamptz
            parts.append(sql.SQL("{} {} {}").format(col, sql.SQL(c.op), sql.Literal(c.values[0])))
    if not parts:
        return sql.SQL("")
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts)


def import_snapshot(snapshot: str) -> sql.Composed:
    return sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot))


def table_pages(resource: Resource) -> sql.Composed:
    """The table's size in pages, from its file size (needs no statistics)."""
    return sql.SQL(
        "SELECT pg_relation_size({}::regclass) / current_setting('block_size')::bigint"
    ).format(sql.Literal(resource.table))


def split_points(resource: Resource, conditions: Sequence[Condition], ranges: int,
                 sample_percent: float) -> sql.Composed:
    """The ids that cut the rows an export selects into ``ranges`` ranges of about equal size.

    Estimated from a block sample of the table (``TABLESAMPLE SYSTEM``), so the
    cost is the sample's, not the table's. Returns one row: an array of ids in
    the column's order, possibly with repeats, or NULL when the sample is empty.
    """
    return sql.SQL(
        "SELECT percentile_disc(ARRAY(SELECT g::float8 / {n} FROM generate_series(1, {last}) g))"
        " WITHIN GROUP (ORDER BY x.id) FROM {table} x TABLESAMPLE SYSTEM ({percent}){where}"
    ).format(n=sql.Literal(ranges), last=sql.Literal(ranges - 1),
             table=sql.Identifier(resource.table), percent=sql.Literal(sample_percent),
             where=where_clause(resource, conditions))


def id_ranges(bounds: Sequence[str | None]) -> list[IdRange]:
    """The ranges between sorted split points (repeats dropped): together, every id."""
    cuts: list[str] = []
    for b in bounds:
        if b is not None and (not cuts or b != cuts[-1]):
            cuts.append(b)
    return list(zip([None, *cuts], [*cuts, None], strict=True))


def export_statement(resource: Resource, fields: Sequence[str], conditions: Sequence[Condition],
                     fmt: str, id_range: IdRange = (None, None), *, header: bool = True,
                     limit: int | None = None) -> sql.Composed:
    """The ``COPY … TO STDOUT`` statement of an export (``fmt`` is ndjson, csv or json).

    ``id_range`` restricts it to one range of a split export; ``header=False``
    leaves out the CSV header (every range but the first); ``limit`` keeps the
    first rows in id order.
    """
    first, end = id_range
    conditions = [*conditions,
                  *([Condition("id", ">=", (first,))] if first is not None else []),
                  *([Condition("id", "<", (end,))] if end is not None else [])]
    select = sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(column_expr(resource, name, fmt), sql.Identifier(name))
        for name in fields
    )
    query = sql.SQL("SELECT {select} FROM {table} x{where} ORDER BY x.id{limit}").format(
        select=select, table=sql.Identifier(resource.table),
        where=where_clause(resource, conditions),
        limit=sql.SQL(" LIMIT {}").format(sql.Literal(limit)) if limit is not None else sql.SQL(""))
    if fmt == "csv":
        return sql.SQL("COPY ({}) TO STDOUT {}").format(
            query, _CSV_COPY if header else _CSV_COPY_NO_HEADER)
    return sql.SQL("COPY (SELECT row_to_json(t) FROM ({}) t) TO STDOUT {}").format(
        query, _NDJSON_COPY)
