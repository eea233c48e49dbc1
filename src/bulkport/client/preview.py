"""``bulkport import FILE --preview``: how the server would read FILE, as a table or JSON.

Also the reading options every import takes from the command line
(``--delimiter``, ``--encoding``, ``--map SOURCE=FIELD``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson

from bulkport.client.http import CliError, Connection, ExitCode, check
from bulkport.client.progress import stdout_console
from bulkport.client.watch import print_json

#: Longest cell shown in the records table (characters).
CELL_CHARS = 40


def reading_fields(args: argparse.Namespace) -> dict[str, str]:
    """The form fields of ``--delimiter``, ``--encoding`` and ``--map`` (when given)."""
    fields: dict[str, str] = {}
    if args.delimiter:
        fields["delimiter"] = "tab" if args.delimiter in ("\\t", "\t") else args.delimiter
    if args.encoding:
        fields["encoding"] = args.encoding
    if args.map:
        mapping: dict[str, str] = {}
        for item in args.map:
            source, sep, target = item.partition("=")
            if not sep or not source or not target:
                raise CliError(f"--map takes SOURCE=FIELD (e.g. Email=email), not {item!r}",
                               ExitCode.USAGE)
            mapping[source] = target
        fields["column_map"] = orjson.dumps(mapping).decode()
    return fields


def cmd_preview(conn: Connection, args: argparse.Namespace, path: Path,
                fields: dict[str, str]) -> ExitCode:
    """``POST /v1/imports/preview`` with ``path``; print the answer."""
    if args.limit is not None:
        fields = {**fields, "limit": str(args.limit)}
    with conn.client() as client, path.open("rb") as f:
        response = client.post("/v1/imports/preview", data=fields,
                               files={"file": (path.name, f, "application/octet-stream")})
        got: dict[str, Any] = orjson.loads(check(response).content)
    if args.json:
        print_json(got)
    else:
        print_preview(got)
    return ExitCode.OK


def print_preview(got: dict[str, Any]) -> None:
    """The reading, the column mapping, and the records with their errors."""
    from rich.table import Table

    console = stdout_console()
    delimiter = {"\t": "tab", None: "-"}.get(got["delimiter"], got["delimiter"])
    bom = " (byte-order mark)" if got["encoding_from_bom"] else ""
    console.print(f"{got['resource']} ({got['mode']}): format {got['format']}, "
                  f"delimiter {delimiter}, encoding {got['encoding']}{bom}")
    if got["encoding_hint"]:
        console.print(f"hint: {got['encoding_hint']}")
    columns = Table(show_edge=False, pad_edge=False, box=None, padding=(0, 2))
    for name in ("column", "field", "matched by"):
        columns.add_column(name)
    for c in got["columns"]:
        columns.add_row(c["column"], c["field"] or "(ignored)", c["matched_by"] or "")
    console.print(columns)
    if got["missing_required_fields"]:
        console.print(f"missing required fields: {', '.join(got['missing_required_fields'])}")
        if got["suggested_column_map"]:
            hint = " ".join(f"--map {k}={v}" for k, v in got["suggested_column_map"].items())
            console.print(f"suggested: {hint}")
    names = [f["name"] for f in got["fields"]]
    records = Table(show_edge=False, pad_edge=False, box=None, padding=(0, 2))
    for name in ["row", *names, "errors"]:
        records.add_column(name, overflow="fold")
    for r in got["records"]:
        values = r["record"] or {}
        errors = "; ".join(f"{e['code']}" + (f" ({e['field']})" if e["field"] else "")
                           for e in r["errors"])
        records.add_row(str(r["row"]), *(_cell(values.get(n)) for n in names),
                        errors or "ok")
    console.print(records)
    valid = sum(1 for r in got["records"] if r["valid"])
    more = "" if got["end_of_file"] else " (the file goes on)"
    console.print(f"{valid} of {len(got['records'])} records valid{more}")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return text if len(text) <= CELL_CHARS else text[:CELL_CHARS - 1] + "…"
