"""``bulkport import FILE``: upload a file as a multipart stream, optionally wait for the job.

httpx streams a multipart file part: it reads the file object 64 KiB at a time
as the request body is sent (``httpx._multipart.FileField.render_data``) and
takes the Content-Length from ``fstat``, so the file is never read whole. The
upload bar counts each chunk as httpx takes it for sending (:class:`CountingFile`).
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bulkport.client.download import format_for_path
from bulkport.client.http import CliError, Connection, ExitCode, check
from bulkport.client.preview import cmd_preview, reading_fields
from bulkport.client.progress import Display
from bulkport.client.watch import (
    TERMINAL,
    WaitTimedOut,
    exit_code,
    interrupted,
    print_json,
    print_summary,
    save_rejects,
    timed_out,
    wait_for,
)


class CountingFile(io.FileIO):
    """A file whose reads report their size (the bytes handed to the socket)."""

    def __init__(self, path: Path, on_read: Callable[[int], None]) -> None:
        super().__init__(path, "rb")
        self.on_read = on_read

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if data:
            self.on_read(len(data))
        return data or b""


def upload(conn: Connection, path: Path, fields: dict[str, str],
           idempotency_key: str | None, on_read: Callable[[int], None]) -> dict[str, Any]:
    """``POST /v1/imports`` with ``path`` streamed as the file part; the job document."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    with conn.client() as client, CountingFile(path, on_read) as f:
        response = client.post("/v1/imports", data=fields, headers=headers,
                               files={"file": (path.name, f, "application/octet-stream")})
        job: dict[str, Any] = orjson.loads(check(response).content)
    return job


def cmd_import(args: argparse.Namespace) -> ExitCode:
    conn = Connection.from_args(args.url, args.api_key)
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"no such file: {path}", ExitCode.USAGE)
    if args.timeout is not None and args.timeout <= 0:
        raise CliError("--timeout must be a positive number of seconds", ExitCode.USAGE)
    wait = args.wait or args.errors_out is not None or args.timeout is not None
    if args.errors_out:  # refuse a bad extension before uploading anything
        format_for_path(args.errors_out, ("csv", "ndjson"))
    fields = {"resource": args.resource, "mode": args.mode,
              "dry_run": "true" if args.dry_run else "false"}
    if args.format:
        fields["format"] = args.format
    fields.update(reading_fields(args))
    if args.preview:
        return cmd_preview(conn, args, path, fields)
    display = Display(enabled=not args.json)
    try:
        with display.upload(path.name, path.stat().st_size) as advance:
            job = upload(conn, path, fields, args.idempotency_key, advance)
    except KeyboardInterrupt:
        raise CliError("upload interrupted; no job was created",
                       ExitCode.INTERRUPTED) from None
    if not wait:
        return _report(conn, args, job, ExitCode.OK)
    return watch(conn, args, job["job_id"], display)


def watch(conn: Connection, args: argparse.Namespace, job_id: str,
          display: Display) -> ExitCode:
    """Wait for the job (``--timeout``), save ``--errors-out``, report; the exit code."""
    try:
        with conn.client() as client:
            with display.job(job_id) as update:
                job = wait_for(client, job_id, timeout=args.timeout, on_update=update)
            errors_out = getattr(args, "errors_out", None)
            if errors_out:
                rows = save_rejects(client, job_id, errors_out)
                job["errors_file"] = {"path": errors_out, "records": rows}
    except KeyboardInterrupt:
        raise interrupted(job_id) from None
    except WaitTimedOut as exc:
        raise timed_out(exc.job, args.timeout) from None
    return _report(conn, args, job, exit_code(job))


def wait_ended(job: dict[str, Any]) -> bool:
    return job["status"] in TERMINAL


def _report(conn: Connection, args: argparse.Namespace, job: dict[str, Any],
            code: ExitCode) -> ExitCode:
    if args.json:
        print_json(job)
        return code
    print_summary(conn, job)
    if not wait_ended(job):
        print(f"the job runs on the server; watch it: bulkport jobs show {job['job_id']} --wait")
    saved = job.get("errors_file")
    if saved:
        print(f"rejected records saved to {saved['path']} ({saved['records']:,} records)")
    return code
