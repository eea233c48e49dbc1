"""``bulkport jobs list|show|cancel|errors``: the import jobs of a running server."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

import httpx

from bulkport.client.http import Connection, ExitCode, check, get_json
from bulkport.client.imports import watch
from bulkport.client.progress import Display, stdout_console
from bulkport.client.watch import exit_code, print_json, print_summary, save_rejects

#: Error entries per page when listing a job's errors.
ERRORS_PAGE = 1000


def cmd_jobs(args: argparse.Namespace) -> ExitCode:
    conn = Connection.from_args(args.url, args.api_key)
    action = args.action or "list"
    if action == "list":
        return _list(conn, args)
    if action == "show":
        if args.wait or args.timeout is not None:
            return watch(conn, args, args.job_id, Display(enabled=not args.json))
        with conn.client() as client:
            job = get_json(client, f"/v1/imports/{args.job_id}")
        if args.json:
            print_json(job)
        else:
            print_summary(conn, job)
        return exit_code(job) if job["status"] not in ("pending", "processing") else ExitCode.OK
    if action == "cancel":
        with conn.client() as client:
            job = check(client.post(f"/v1/imports/{args.job_id}/cancel")).json()
        if args.json:
            print_json(job)
        else:
            print(f"job {job['job_id']} {job['status']}: the batch in flight finishes, "
                  "nothing after it is imported")
        return ExitCode.OK
    return _errors(conn, args)


def _list(conn: Connection, args: argparse.Namespace) -> ExitCode:
    # ``bulkport jobs`` alone lists too, without the options of ``jobs list``.
    params: dict[str, Any] = {"limit": getattr(args, "limit", 20)}
    for name in ("status", "resource"):
        if getattr(args, name, None):
            params[name] = getattr(args, name)
    with conn.client() as client:
        page = get_json(client, "/v1/imports", **params)
    if args.json:
        print_json(page)
        return ExitCode.OK
    from rich.table import Table

    table = Table(box=None, pad_edge=False, padding=(0, 2))
    table.add_column("job", no_wrap=True, min_width=36)  # ids are copied from here whole
    for name, justify in (("resource", "left"), ("status", "left"),
                          ("processed", "right"), ("rejected", "right"), ("file", "left"),
                          ("created", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for job in page["data"]:
        table.add_row(job["job_id"], job["resource"], job["status"],
                      f"{job['processed_records']:,}", f"{job['error_records']:,}",
                      job.get("file_name") or "", job["created_at"][:19].replace("T", " "))
    stdout_console().print(table if page["data"] else "no import jobs")
    return ExitCode.OK


def _errors(conn: Connection, args: argparse.Namespace) -> ExitCode:
    with conn.client() as client:
        if args.output:
            rows = save_rejects(client, args.job_id, args.output)
            print(f"saved {rows:,} rejected records to {args.output}")
            return ExitCode.OK
        entries = _entries(client, args.job_id, args.limit)
        if args.json:
            print_json({"job_id": args.job_id, "data": list(entries)})
            return ExitCode.OK
        from rich.table import Table

        table = Table(box=None, pad_edge=False, padding=(0, 2))
        for name in ("row", "field", "code", "message"):
            table.add_column(name, justify="right" if name == "row" else "left")
        count = 0
        for entry in entries:
            table.add_row(str(entry["row"]), entry.get("field") or "", entry["code"],
                          entry.get("message") or "")
            count += 1
    stdout_console().print(table if count else f"job {args.job_id} has no errors")
    return ExitCode.OK


def _entries(client: httpx.Client, job_id: str, limit: int | None) -> Iterator[dict[str, Any]]:
    """Every error entry of the job (at most ``limit``), following the pages."""
    cursor: str | None = None
    seen = 0
    while True:
        params: dict[str, Any] = {"limit": ERRORS_PAGE}
        if cursor:
            params["cursor"] = cursor
        page = get_json(client, f"/v1/imports/{job_id}/errors", **params)
        for entry in page["data"]:
            if limit is not None and seen >= limit:
                return
            seen += 1
            yield entry
        cursor = page.get("next_cursor")
        if not cursor:
            return
