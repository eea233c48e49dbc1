"""Progress bars (rich) on stderr: upload, job, export.

Bars are drawn only when stderr is a terminal and ``--json`` is not given;
otherwise every method here is a no-op that builds nothing, so a scripted run
pays nothing for them. The bars are transient: once a phase ends
its bar is replaced by the one-line summary the command prints.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

#: Redraws per second; the job bar is fed by status polls, which come less often.
REFRESH_PER_SECOND = 8
#: Width of tables printed to a pipe or file (a terminal's own width otherwise).
OFF_TERMINAL_WIDTH = 200


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


class Display:
    """The bars of one command run."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and stderr_is_terminal()

    def _progress(self, *columns: Any) -> Any:
        from rich.console import Console
        from rich.progress import Progress

        return Progress(*columns, console=Console(stderr=True), transient=True,
                        refresh_per_second=REFRESH_PER_SECOND)

    @contextmanager
    def upload(self, name: str, total: int) -> Iterator[Callable[[int], None]]:
        """Yields ``advance(nbytes)``: bytes sent, speed, time left."""
        if not self.enabled:
            yield _ignore
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        with self._progress(TextColumn("uploading {task.description}"), BarColumn(),
                            DownloadColumn(), TransferSpeedColumn(),
                            TimeRemainingColumn()) as bar:
            task = bar.add_task(name, total=total)
            yield lambda n: bar.advance(task, n)

    @contextmanager
    def job(self, job_id: str) -> Iterator[Callable[[dict[str, Any]], None]]:
        """Yields ``update(job_status)``: processed/total, rows/s, ETA, from the server."""
        if not self.enabled:
            yield _ignore
            return
        from rich.progress import BarColumn, TaskProgressColumn, TextColumn

        with self._progress(TextColumn("{task.description}"), BarColumn(),
                            TaskProgressColumn(), TextColumn("{task.fields[counts]}"),
                            TextColumn("{task.fields[rate]}"),
                            TextColumn("{task.fields[eta]}")) as bar:
            task = bar.add_task(f"job {job_id[:8]}", total=1.0, counts="", rate="", eta="")

            def update(job: dict[str, Any]) -> None:
                bar.update(task, completed=float(job.get("progress") or 0.0),
                           description=f"job {job_id[:8]} {job['status']}", **job_fields(job))

            yield update

    @contextmanager
    def export(self, resource: str) -> Iterator[Callable[[int, int], None]]:
        """Yields ``update(rows, bytes)``: rows and bytes written so far (total unknown)."""
        if not self.enabled:
            yield _ignore
            return
        from rich.filesize import decimal
        from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

        with self._progress(SpinnerColumn(), TextColumn("exporting {task.description}"),
                            TextColumn("{task.fields[rows]:,} rows"),
                            TextColumn("{task.fields[size]}"), TimeElapsedColumn()) as bar:
            task = bar.add_task(resource, total=None, rows=0, size="0 bytes")

            def update(rows: int, nbytes: int) -> None:
                bar.update(task, rows=rows, size=decimal(nbytes))

            yield update


def job_fields(job: dict[str, Any]) -> dict[str, str]:
    """The text of the job bar: ``1,234/10,000 rows``, ``5,678 rows/s``, ``ETA 0:00:12``."""
    total = job.get("total_records")
    processed = job.get("processed_records") or 0
    counts = f"{processed:,}/{total:,} rows" if total else f"{processed:,} rows"
    rate = job.get("rows_per_sec")
    eta = job.get("eta_seconds")
    return {"counts": counts,
            "rate": f"{rate:,.0f} rows/s" if rate else "- rows/s",
            "eta": f"ETA {format_seconds(eta)}" if eta is not None else "ETA -"}


def format_seconds(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def stdout_console() -> Any:
    """A rich console on stdout; off a terminal lines are not wrapped at 80 columns."""
    from rich.console import Console

    terminal = sys.stdout.isatty()
    return Console(highlight=False, soft_wrap=not terminal,
                   width=None if terminal else OFF_TERMINAL_WIDTH)


def _ignore(*args: Any) -> None:
    return None
