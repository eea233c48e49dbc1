#!/usr/bin/env python3
"""Console benchmark: does the job page stay responsive during a large import?

Target: the job page's update requests have p99 <= 100 ms during a 1M-row import.

One run:

1. generates the users file with ``bulkport gen`` (``--flaw-rate`` flawed rows, so
   the page has errors to show) and starts a fresh embedded PostgreSQL and
   ``bulkport serve`` — the helpers of bench/bench_import.py;
2. uploads the file with ``POST /v1/imports``;
3. makes exactly the requests of the console's job page (static/js/job.js), at its
   update interval: ``GET /v1/imports/{id}`` every second (the next one a second
   after the previous answer, as the page's timer does), and, whenever
   ``error_records`` changed, the first page of the error table
   ``GET /v1/imports/{id}/errors?limit=50``;
4. prints one JSON line: p50/p99/max of each kind of request and of all of them,
   with the load average at the start and the end.

Usage: ``python bench/bench_console.py [--rows N] [--flaw-rate 0.05] [--workers 4]``
(see bench/README.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

# bench/ is no package: its sibling script is imported by path (also when run from elsewhere).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_import import (
    TERMINAL,
    bulkport_server,
    create_database,
    make_files,
    percentile,
    postgres,
    run_in_work_dir,
)

#: The job page's update interval (static/js/ui.js POLL_MS) and error-table page size.
POLL_SECONDS = 1.0
ERROR_PAGE = 50
#: The target of the p99 latency of an update request (ms).
TARGET_P99_MS = 100.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="users imported (default 1M)")
    p.add_argument("--flaw-rate", type=float, default=0.05,
                   help="share of flawed rows (default 0.05: the page shows errors)")
    p.add_argument("--workers", type=int, default=4, help="server worker processes (default 4)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="BULKPORT_BATCH_SIZE for the server (default: the server's default)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--work-dir", type=Path, default=None)
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args(argv)
    args.resource = "users"  # what make_files() of bench_import reads
    args.users = None
    return args


def stats(ms: list[float]) -> dict[str, Any]:
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "p50_ms": round(percentile(ms, 0.50), 1),
            "p99_ms": round(percentile(ms, 0.99), 1), "max_ms": round(max(ms), 1)}


def watch_job_page(base: str, path: Path) -> dict[str, Any]:
    """Upload, then poll as the job page does until the job ends."""
    status_ms: list[float] = []
    errors_ms: list[float] = []
    with httpx.Client(base_url=base, timeout=httpx.Timeout(600.0)) as client:
        with path.open("rb") as f:
            resp = client.post("/v1/imports", data={"resource": "users"},
                               files={"file": (path.name, f, "text/csv")})
        if resp.status_code != 202:
            raise RuntimeError(f"POST /v1/imports answered {resp.status_code}: {resp.text}")
        job_id = resp.json()["job_id"]
        shown_errors = -1
        while True:
            t0 = time.perf_counter()
            job: dict[str, Any] = client.get(f"/v1/imports/{job_id}").raise_for_status().json()
            status_ms.append((time.perf_counter() - t0) * 1000)
            if job["error_records"] != shown_errors:
                shown_errors = job["error_records"]
                t0 = time.perf_counter()
                client.get(f"/v1/imports/{job_id}/errors",
                           params={"limit": ERROR_PAGE}).raise_for_status()
                errors_ms.append((time.perf_counter() - t0) * 1000)
            if job["status"] in TERMINAL:
                return {"job": job, "status_ms": status_ms, "errors_ms": errors_ms}
            time.sleep(POLL_SECONDS)


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    files = make_files(args, work)
    load_start = os.getloadavg()
    with postgres(work, args.keep) as (uri, _pgdata):
        url = create_database(uri, "bench_console")
        with bulkport_server(url, work, args.workers, args.batch_size) as (base, _proc):
            started = time.perf_counter()
            result = watch_job_page(base, files["import"])
            seconds = time.perf_counter() - started
    load_end = os.getloadavg()
    job = result["job"]
    every = stats(result["status_ms"] + result["errors_ms"])
    return {
        "bench": "console", "rows": args.rows, "flaw_rate": args.flaw_rate,
        "workers": args.workers, "batch_size": args.batch_size, "poll_seconds": POLL_SECONDS,
        "status": job["status"], "successful": job["successful_records"],
        "rejected": job["error_records"], "seconds": round(seconds, 1),
        "job_status_requests": stats(result["status_ms"]),
        "error_page_requests": stats(result["errors_ms"]),
        "all_requests": every,
        "target_p99_ms": TARGET_P99_MS, "meets_target": every.get("p99_ms", 0) <= TARGET_P99_MS,
        "cpus": os.cpu_count(),
        "load_avg_start": [round(x, 2) for x in load_start],
        "load_avg_end": [round(x, 2) for x in load_end],
    }


def main(argv: list[str] | None = None) -> None:
    run_in_work_dir(parse_args(argv), run, "bulkport-bench-console-")


if __name__ == "__main__":
    main()
