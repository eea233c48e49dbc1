#!/usr/bin/env python3
"""Scale benchmark: one large users import spread over workers, against raw ``COPY``.

One run, on one fresh embedded PostgreSQL (the helpers of ``bench_import.py``):

1. generates 1M users (``--rows``): a clean file, and with ``--flaw-rate`` (default
   0.05) a flawed one of the same size;
2. ``copy_1``: raw ``COPY … FROM STDIN (FORMAT csv)`` of the clean file, one stream;
3. ``copy_2``: the clean file cut in two halves at a line boundary, each COPYed
   at the same time over its own connection into the same table: the physical
   limit of two streams on this machine;
4. ``bulkport``: the real server (``bulkport serve``) over HTTP with each of
   ``--workers`` (default ``default,1,2,4,stream``; ``default`` is the server's
   default worker count, ``stream`` the same with splitting off) on the clean
   file, and with ``--flawed-workers`` (default ``default``) on the flawed file.
   Large files are split into chunks
   (``BULKPORT_SPLIT_MIN_BYTES``, ``BULKPORT_CHUNK_BYTES``; ``--split-min-bytes`` and
   ``--chunk-bytes`` override them, e.g. for a small ``--rows``).

Each run prints one JSON line: rows per second, the ratio to ``copy_1`` and
``copy_2``, where the time went (CPU seconds of PostgreSQL's processes and of
bulkport's per record, the share of samples in which a backend waited for a
lock), a model of the rate on 8 and 16 cores from those per-record costs, and
the load average. The table is emptied and checkpointed between runs.

Usage: ``python bench/bench_scale.py [--rows N] [--flaw-rate 0.05]
[--workers default,1,2,4] [--flawed-workers default] [--chunk-bytes N]
[--split-min-bytes N]`` (see bench/README.md, "Scale").
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_import import (  # the sibling script's helpers
    MIB,
    USER_COLUMNS,
    _children,
    bulkport_server,
    checkpoint,
    copy_file,
    count_rows,
    create_database,
    empty_table,
    import_over_http,
    make_files,
    postgres,
    postmaster,
    run_in_work_dir,
)

#: How often backends' wait events are sampled (seconds).
WAIT_SAMPLE_SECONDS = 0.1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--flaw-rate", type=float, default=0.05,
                   help="flaws of the second file (default 0.05; 0: no flawed runs)")
    p.add_argument("--workers", default="default,1,2,4,stream",
                   help="worker counts of the clean runs, comma-separated; 'stream': "
                        "the default workers with splitting off (one stream)")
    p.add_argument("--flawed-workers", default="default",
                   help="worker counts of the flawed runs, comma-separated")
    p.add_argument("--chunk-bytes", type=int, default=None)
    p.add_argument("--split-min-bytes", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--work-dir", type=Path, default=None)
    p.add_argument("--keep", action="store_true")
    return p.parse_args(argv)


# --- where the time goes ----------------------------------------------------------------


def tree_cpu(root: psutil.Process) -> float:
    """CPU seconds (user + system) of ``root`` and its descendants, reaped ones included."""
    total = 0.0
    for p in [root, *_children(root)]:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


class WaitSampler:
    """Samples ``pg_stat_activity``: how often a backend of the database waits for a lock."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples = 0
        self.lock_samples = 0
        self.active = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> WaitSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as c:
            while not self._stop.wait(WAIT_SAMPLE_SECONDS):
                row = c.execute(
                    "SELECT count(*) FILTER (WHERE wait_event_type = 'Lock'),"
                    " count(*) FILTER (WHERE state = 'active')"
                    " FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid()").fetchone()
                assert row is not None
                self.samples += 1
                self.lock_samples += bool(row[0])
                self.active += row[1]

    def result(self) -> dict[str, Any]:
        n = max(1, self.samples)
        return {"lock_wait_share": round(self.lock_samples / n, 3),
                "active_backends_avg": round(self.active / n, 2)}


# --- raw COPY over two connections ------------------------------------------------------


def halves(src: Path, work: Path) -> tuple[Path, Path]:
    """``src`` cut at the line nearest its middle; both halves get the header."""
    data = src.read_bytes()
    header_end = data.index(b"\n") + 1
    middle = data.index(b"\n", len(data) // 2) + 1
    a, b = work / "half1.csv", work / "half2.csv"
    a.write_bytes(data[:middle])
    b.write_bytes(data[:header_end] + data[middle:])
    return a, b


def copy_two(url: str, parts: tuple[Path, Path]) -> float:
    """Both halves COPYed at once over two connections; wall seconds."""
    errors: list[BaseException] = []

    def one(path: Path) -> None:
        try:
            copy_file(url, "users", USER_COLUMNS, path)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(p,)) for p in parts]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started


# --- runs -------------------------------------------------------------------------------


def base_line(name: str, rows: int, seconds: float, pg_cpu: float, waits: dict[str, Any],
              copy_rates: dict[str, float]) -> dict[str, Any]:
    rate = rows / seconds
    out: dict[str, Any] = {
        "bench": "scale", "run": name, "rows": rows, "seconds": round(seconds, 2),
        "rows_per_sec": round(rate),
        "pg_cpu_seconds": round(pg_cpu, 2),
        "pg_cpu_us_per_record": round(pg_cpu / rows * 1e6, 2), **waits,
    }
    for key, copy_rate in copy_rates.items():
        out[f"ratio_vs_{key}"] = round(rate / copy_rate, 3)
    out["cpus"] = os.cpu_count()
    out["load_avg_1m"] = round(os.getloadavg()[0], 2)
    return out


def model(out: dict[str, Any]) -> None:
    """Rates on 8 and 16 cores if every core ran records at the measured CPU cost (no
    other limit: disk, WAL and lock waits are not modelled)."""
    per_record = (out["pg_cpu_us_per_record"] + out.get("py_cpu_us_per_record", 0.0)) / 1e6
    if per_record > 0:
        for cores in (8, 16):
            out[f"model_rows_per_sec_{cores}_cores"] = round(cores / per_record)


def bulkport_run(args: argparse.Namespace, url: str, work: Path, pg: psutil.Process,
                 path: Path, workers: str, expected: dict[str, Any],
                 copy_rates: dict[str, float], label: str) -> dict[str, Any]:
    empty_table(url, "users")
    checkpoint(url)
    env = {}
    if args.chunk_bytes:
        env["BULKPORT_CHUNK_BYTES"] = str(args.chunk_bytes)
    if args.split_min_bytes is not None:
        env["BULKPORT_SPLIT_MIN_BYTES"] = str(args.split_min_bytes)
    if workers == "stream":  # today's path for comparison: no split, default workers
        env["BULKPORT_SPLIT_MIN_BYTES"] = "0"
    count = int(workers) if workers not in ("default", "stream") else None
    if count is None:
        from bulkport.config import Settings

        count = Settings().workers
    with bulkport_server(url, work, count, args.batch_size, extra_env=env) as (base, proc):
        root = psutil.Process(proc.pid)
        time.sleep(1)  # the worker processes are up
        pg0, py0 = tree_cpu(pg), tree_cpu(root)
        with WaitSampler(url) as waits:
            result = import_over_http(base, path, "users")
        pg_cpu, py_cpu = tree_cpu(pg) - pg0, tree_cpu(root) - py0
        job = result["job"]
        with psycopg.connect(url) as c:
            chunks = c.execute("SELECT count(*), count(DISTINCT owner) FROM import_chunks"
                               " WHERE job_id = %s AND NOT is_tail", (job["job_id"],)).fetchone()
    rows = job["processed_records"]
    out = base_line(f"bulkport_{label}_workers_{workers}", rows, result["seconds"], pg_cpu,
                    waits.result(), copy_rates)
    out.update({
        "workers": count, "py_cpu_seconds": round(py_cpu, 2),
        "py_cpu_us_per_record": round(py_cpu / rows * 1e6, 2),
        "upload_seconds": round(result["upload_seconds"], 2),
        "chunks": chunks[0] if chunks else 0, "chunk_workers": chunks[1] if chunks else 0,
        "status": job["status"], "successful": job["successful_records"],
        "rejected": job["error_records"],
        "matches_expected": (job["successful_records"] == expected["successful"]
                             and job["error_records"] == expected["rejected"]
                             and job["error_counts"] == expected["error_counts"]),
        "file_mib": round(path.stat().st_size / MIB, 1),
    })
    model(out)
    return out


def run(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    # One call writes the clean file (the baseline, and the clean runs' input) and,
    # with a flaw rate, the flawed one of the same size.
    files = make_files(argparse.Namespace(**{**vars(args), "resource": "users",
                                             "users": None, "delimiter": ","}), work)
    clean = {"baseline": files["baseline"], "import": files["baseline"],
             "expected": {"successful": args.rows, "rejected": 0, "error_counts": {}}}
    flawed = files if args.flaw_rate > 0 else None
    lines: list[dict[str, Any]] = []
    with postgres(work, args.keep) as (uri, pgdata):
        pg = postmaster(pgdata)
        copy_url = create_database(uri, "bench_copy")
        bulk_url = create_database(uri, "bench_bulkport")
        rates: dict[str, float] = {}
        # Raw COPY, one stream.
        pg0 = tree_cpu(pg)
        with WaitSampler(copy_url) as waits:
            seconds = copy_file(copy_url, "users", USER_COLUMNS, clean["baseline"])
        assert count_rows(copy_url, "users") == args.rows
        line = base_line("copy_1", args.rows, seconds, tree_cpu(pg) - pg0, waits.result(), {})
        model(line)
        emit(lines, line)
        rates["copy_1"] = args.rows / seconds
        # Raw COPY, two streams into the same table.
        empty_table(copy_url, "users")
        checkpoint(copy_url)
        parts = halves(clean["baseline"], work)
        pg0 = tree_cpu(pg)
        with WaitSampler(copy_url) as waits:
            seconds = copy_two(copy_url, parts)
        assert count_rows(copy_url, "users") == args.rows
        line = base_line("copy_2", args.rows, seconds, tree_cpu(pg) - pg0, waits.result(),
                         {"copy_1": rates["copy_1"]})
        model(line)
        emit(lines, line)
        rates["copy_2"] = args.rows / seconds
        empty_table(copy_url, "users")
        for workers in args.workers.split(","):
            emit(lines, bulkport_run(args, bulk_url, work, pg, clean["import"], workers.strip(),
                                     clean["expected"], rates, "clean"))
        if flawed is not None:
            for workers in args.flawed_workers.split(","):
                emit(lines, bulkport_run(args, bulk_url, work, pg, flawed["import"],
                                         workers.strip(), flawed["expected"], rates,
                                         f"flawed_{args.flaw_rate}"))
    return lines


def emit(lines: list[dict[str, Any]], line: dict[str, Any]) -> None:
    """Print each result as it comes (a 1M run takes minutes), and keep it."""
    import json

    print(json.dumps(line), flush=True)
    lines.append(line)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # The lines were printed as they came: run_in_work_dir's final print is a summary.
    run_in_work_dir(args, lambda a, w: {"bench": "scale", "runs": len(run(a, w)),
                                        "load_avg_1m": round(os.getloadavg()[0], 2)},
                    "bulkport-bench-scale-")


if __name__ == "__main__":
    main()
