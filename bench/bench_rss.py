#!/usr/bin/env python3
"""Process memory of an idle server: the RSS of every bulkport process, summed.

One run:

1. starts a fresh embedded PostgreSQL (pgserver) with bulkport's schema;
2. starts the real server, ``python -m bulkport serve --workers N`` (default
   4), which starts its worker processes;
3. waits until the worker processes are up and ``--settle`` seconds more (the
   workers have polled for jobs and run their first sweep), then samples the
   RSS of the server process and all its descendants (worker processes, and
   anything else they started; never PostgreSQL, which is not their child)
   ``--samples`` times, 0.5 s apart;
4. prints one JSON line: the median of the summed RSS, and each process's
   RSS with its role.

The peak during an import is measured by bench/bench_import.py
(``peak_rss_bulkport_mib``), over the same process tree.

Usage: ``python bench/bench_rss.py [--workers 4] [--settle 10] [--samples 10]``
(see bench/README.md, section "Process memory").
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import psutil
from bench_import import bulkport_server, create_database, postgres, run_in_work_dir, tree_rss

MIB = 1024 * 1024
#: Pause between two samples (seconds).
SAMPLE_SECONDS = 0.5
#: Longest wait for the worker processes to appear (seconds).
WORKERS_TIMEOUT_SECONDS = 60


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=4, help="server workers (default 4)")
    p.add_argument("--settle", type=float, default=10.0,
                   help="seconds to wait once the workers are up (default 10)")
    p.add_argument("--samples", type=int, default=10, help="RSS samples (default 10)")
    p.add_argument("--work-dir", type=Path, default=None)
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    return p.parse_args(argv)


def role(p: psutil.Process, root: psutil.Process) -> str:
    """What a process of the server's tree is, from its command line."""
    if p.pid == root.pid:
        return "server"
    cmd = " ".join(p.cmdline())
    if "resource_tracker" in cmd:
        return "multiprocessing resource tracker"
    if "bulkport.jobs.processes" in cmd or "spawn_main" in cmd:
        return "worker"
    return cmd[:80]


def expected_workers(workers: int) -> int:
    """Worker processes ``serve`` starts: at most one per core (bulkport.jobs.worker)."""
    return max(1, min(workers, os.cpu_count() or 1)) if workers else 0


def wait_for_workers(root: psutil.Process, count: int) -> None:
    deadline = time.monotonic() + WORKERS_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        procs = [p for p in root.children(recursive=True) if role(p, root) == "worker"]
        if len(procs) >= count:
            return
        time.sleep(0.2)
    raise RuntimeError(f"fewer than {count} worker processes after {WORKERS_TIMEOUT_SECONDS}s")


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    with postgres(work, args.keep) as (uri, _pgdata):
        url = create_database(uri, "bench_rss")
        with bulkport_server(url, work, args.workers, None) as (_base, proc):
            root = psutil.Process(proc.pid)
            wait_for_workers(root, expected_workers(args.workers))
            time.sleep(args.settle)
            totals = []
            for _ in range(args.samples):
                totals.append(tree_rss(root))
                time.sleep(SAMPLE_SECONDS)
            procs = [root, *root.children(recursive=True)]
            each = sorted(({"role": role(p, root), "rss_mib": round(p.memory_info().rss / MIB, 1)}
                           for p in procs), key=lambda e: (e["role"], -e["rss_mib"]))
    return {
        "bench": "rss", "workers": args.workers, "settle_seconds": args.settle,
        "idle_rss_bulkport_mib": round(statistics.median(totals) / MIB, 1),
        "min_mib": round(min(totals) / MIB, 1), "max_mib": round(max(totals) / MIB, 1),
        "processes": each, "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> None:
    run_in_work_dir(parse_args(argv), run, "bulkport-bench-rss-")


if __name__ == "__main__":
    main()
