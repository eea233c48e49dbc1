"""Waiting for an import job, and telling how it ended (summary, JSON, exit code)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from bulkport.client.download import format_for_path, save
from bulkport.client.http import CliError, Connection, ExitCode, check, get_json
from bulkport.client.progress import stdout_console
from bulkport.client.rows import RowCounter

TERMINAL = frozenset({"completed", "completed_with_errors", "failed", "cancelled"})
#: Status polls start every 0.1 s and slow by 0.1% of the time waited, to one every
#: 0.5 s after 400 s: the end of a job is seen within ~0.1 s (on a 20 s import, half
#: a poll period is under 0.5%), and a poll costs the server a few milliseconds.
POLL_MIN_SECONDS = 0.1
POLL_MAX_SECONDS = 0.5
POLL_RAMP = 1000.0
#: A server restarting (connection refused, 502/503/504) is waited out this long.
OUTAGE_SECONDS = 60.0
TRANSIENT_STATUS = frozenset({502, 503, 504})
OUTAGE_POLL_SECONDS = 1.0


class WaitTimedOut(Exception):
    def __init__(self, job: dict[str, Any]) -> None:
        super().__init__(job["job_id"])
        self.job = job


def wait_for(client: httpx.Client, job_id: str, *, timeout: float | None,
             on_update: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Poll the job until it ends; :class:`WaitTimedOut` after ``timeout`` seconds."""
    started = time.monotonic()
    deadline = started + timeout if timeout is not None else None
    job: dict[str, Any] = {"job_id": job_id, "status": "unknown"}
    outage: float | None = None
    while True:
        try:
            job = get_json(client, f"/v1/imports/{job_id}")
            outage = None
        except (httpx.TransportError, CliError) as exc:
            # The job lives in the database, not in the server process: a restart
            # (deploy, crash) must not end a long wait.
            if isinstance(exc, CliError) and exc.status not in TRANSIENT_STATUS:
                raise
            outage = outage or time.monotonic()
            if time.monotonic() - outage > OUTAGE_SECONDS:
                raise
        else:
            on_update(job)
            if job["status"] in TERMINAL:
                return job
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            raise WaitTimedOut(job)
        pause = min(POLL_MAX_SECONDS, POLL_MIN_SECONDS + (now - started) / POLL_RAMP)
        if outage is not None:
            pause = OUTAGE_POLL_SECONDS
        time.sleep(pause if deadline is None else max(0.0, min(pause, deadline - now)))


def exit_code(job: dict[str, Any]) -> ExitCode:
    status = job["status"]
    if status in ("failed", "cancelled"):
        return ExitCode.FAILED
    if job.get("error_records"):
        return ExitCode.REJECTED
    return ExitCode.OK


def interrupted(job_id: str) -> CliError:
    return CliError(f"stopped waiting; job {job_id} goes on on the server. "
                    f"Watch it: bulkport jobs show {job_id} --wait; "
                    f"cancel it: bulkport jobs cancel {job_id}", ExitCode.INTERRUPTED)


def timed_out(job: dict[str, Any], timeout: float) -> CliError:
    job_id = job["job_id"]
    return CliError(f"job {job_id} is still {job['status']} after {timeout:g} s "
                    f"({job.get('processed_records') or 0:,} records so far); "
                    f"come back with: bulkport jobs show {job_id} --wait", ExitCode.TIMEOUT,
                    job)


def save_rejects(client: httpx.Client, job_id: str, path: str) -> int:
    """Write the job's rejected records (CSV or NDJSON by ``path``); the records written."""
    fmt = format_for_path(path, ("csv", "ndjson"))
    counter = RowCounter(fmt)
    with client.stream("GET", f"/v1/imports/{job_id}/errors", params={"format": fmt},
                       headers={"Accept-Encoding": "identity"}) as response:
        save(check(response), path, counter)
    return counter.rows


def print_json(document: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()


def print_summary(conn: Connection, job: dict[str, Any]) -> None:
    """Counts, the error counts by code as a table, the job id and the errors URL."""
    from rich.table import Table

    console = stdout_console()
    what = ", ".join(str(x) for x in (job.get("resource"), job.get("mode"),
                                      job.get("file_name")) if x)
    dry = " (dry run: nothing written)" if job.get("dry_run") else ""
    console.print(f"job {job['job_id']} [bold]{job['status']}[/bold]{dry}  ({what})")
    if job["status"] in TERMINAL:
        line = (f"processed {job.get('processed_records') or 0:,}  "
                f"successful {job.get('successful_records') or 0:,}  "
                f"rejected {job.get('error_records') or 0:,}")
        seconds = _seconds(job)
        if seconds is not None:
            line += f"  in {seconds:.1f} s"
        if job.get("rows_per_sec"):
            line += f"  ({job['rows_per_sec']:,.0f} rows/s)"
    else:
        line = (f"processed {job.get('processed_records') or 0:,} so far  "
                f"progress {100 * float(job.get('progress') or 0):.0f}%")
    console.print(line)
    counts: dict[str, int] = job.get("error_counts") or {}
    if counts:
        table = Table(show_edge=False, pad_edge=False, box=None, padding=(0, 2))
        table.add_column("error")
        table.add_column("count", justify="right")
        for code, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            table.add_row(code, f"{n:,}")
        console.print(table)
    if job.get("failure_reason"):
        console.print(f"failure: {job['failure_reason']}")
    if job.get("error_records"):
        console.print(f"errors: {conn.absolute(job['errors_url'])}")


def _seconds(job: dict[str, Any]) -> float | None:
    from datetime import datetime

    if not job.get("started_at") or not job.get("completed_at"):
        return None
    started = datetime.fromisoformat(job["started_at"])
    return (datetime.fromisoformat(job["completed_at"]) - started).total_seconds()
