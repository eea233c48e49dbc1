"""``bulkport export``: stream ``GET /v1/exports`` to a file or stdout.

Without ``--gzip`` the client asks for ``Accept-Encoding: identity``: httpx
would otherwise offer gzip, making the server compress and the client inflate
for nothing on a local link. With ``--gzip`` (or an output path ending in
``.gz``) the compressed stream is written as it arrives.
"""

from __future__ import annotations

import argparse
import sys
import time

from bulkport.client.download import STDOUT, format_for_path, save
from bulkport.client.http import CliError, Connection, ExitCode, check
from bulkport.client.progress import Display
from bulkport.client.rows import RowCounter
from bulkport.client.watch import print_json

FORMATS = ("ndjson", "csv", "json")


#: Query parameters as httpx types them (repeated keys for any-of filters).
Params = list[tuple[str, str | int | float | bool | None]]


def export_params(args: argparse.Namespace, fmt: str) -> Params:
    params: Params = [("resource", args.resource), ("format", fmt)]
    if args.fields:
        params.append(("fields", args.fields))
    for item in args.filter or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--filter takes KEY=VALUE, not {item!r}", ExitCode.USAGE)
        if key in ("resource", "format", "fields"):
            raise CliError(f"use --{key}, not --filter {key}=…", ExitCode.USAGE)
        params.append((key, value))
    return params


def cmd_export(args: argparse.Namespace) -> ExitCode:
    conn = Connection.from_args(args.url, args.api_key)
    out = args.output
    fmt = args.format or (format_for_path(out, FORMATS, "ndjson") if out != STDOUT
                          else "ndjson")
    gzipped = args.gzip or out.lower().endswith(".gz")
    if out == STDOUT and args.json:
        raise CliError("--json needs -o FILE: stdout is the export itself", ExitCode.USAGE)
    if out == STDOUT and gzipped and sys.stdout.isatty():
        raise CliError("refusing to write gzip to a terminal; use -o FILE.gz or a pipe",
                       ExitCode.USAGE)
    headers = {"Accept-Encoding": "gzip" if gzipped else "identity"}
    counter = RowCounter(fmt, gzipped=gzipped)
    display = Display(enabled=not args.json)
    started = time.monotonic()
    try:
        with conn.client() as client, client.stream(
                "GET", "/v1/exports", params=export_params(args, fmt),
                headers=headers) as response, display.export(args.resource) as update:
            written = save(check(response), out, counter, raw=gzipped, on_chunk=update)
    except KeyboardInterrupt:
        raise CliError("export interrupted"
                       + ("" if out == STDOUT else f"; {out} was not written"),
                       ExitCode.INTERRUPTED) from None
    seconds = time.monotonic() - started
    if args.json:
        print_json({"resource": args.resource, "format": fmt, "gzip": gzipped, "path": out,
                    "records": counter.rows, "bytes": written, "seconds": round(seconds, 3)})
        return ExitCode.OK
    where = "stdout" if out == STDOUT else out
    # The summary goes to stderr: stdout may be the export itself.
    print(f"exported {counter.rows:,} {args.resource} records ({written:,} bytes, {fmt}"
          f"{', gzip' if gzipped else ''}) to {where} in {seconds:.1f} s", file=sys.stderr)
    return ExitCode.OK
