#!/usr/bin/env python3
"""Export benchmark: ``GET /v1/exports`` over HTTP against raw ``COPY … TO STDOUT``.

One run:

1. starts a fresh embedded PostgreSQL (pgserver, default settings) with
   bulkport's schema and fills ``users`` with N rows by ``generate_series``
   (ids in insertion order by default, like a table loaded from a file
   sorted by id or with time-ordered ids; ``--random-ids`` for UUIDv4 ids,
   whose id order is random on disk);
2. starts the real server, ``python -m bulkport serve`` (no workers: a
   streaming export does not use them);
3. for NDJSON, then CSV, alternates ``--repeat`` times:

   * raw: ``COPY (SELECT row_to_json(t) FROM users t) TO STDOUT`` /
     ``COPY (SELECT * FROM users) TO STDOUT (FORMAT csv)`` read to the end
     with psycopg's copy iterator;
   * bulkport: ``GET /v1/exports?resource=users&format=ndjson|csv`` read to
     the end with the standard library's ``http.client`` (``Accept-Encoding:
     identity``);

   and keeps the median time of each, while a sampler adds up the RSS of the
   server process tree every 50 ms;
4. prints one JSON line.

Usage: ``python bench/bench_export.py [--rows N] [--repeat 3] [--random-ids] [--lanes N]``
(see bench/README.md, section "Exports").
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psutil

from bulkport import db
from bulkport.config import Settings

#: RSS sampling period (seconds).
SAMPLE_SECONDS = 0.05
#: Longest wait for the server to answer /health (seconds).
START_TIMEOUT_SECONDS = 120
#: Read size of the HTTP client (bytes).
HTTP_CHUNK_BYTES = 1 << 20
MIB = 1024 * 1024

RAW = {
    "ndjson": "COPY (SELECT row_to_json(t) FROM users t) TO STDOUT",
    "csv": "COPY (SELECT * FROM users) TO STDOUT (FORMAT csv)",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="users exported (default 1M)")
    p.add_argument("--repeat", type=int, default=3,
                   help="timed runs of each side per format; the median is kept (default 3)")
    p.add_argument("--random-ids", action="store_true",
                   help="UUIDv4 ids: id order is random on disk (default: insertion order)")
    p.add_argument("--lanes", type=int, default=None,
                   help="the server's export_lanes (default: the server's default)")
    p.add_argument("--work-dir", type=Path, default=None)
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    return p.parse_args(argv)


@contextmanager
def postgres(work: Path) -> Iterator[tuple[str, Path]]:
    os.environ.setdefault("XDG_RUNTIME_DIR", str(work))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    pgdata = work / "pg"
    server = pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
    try:
        yield server.get_uri(), pgdata
    finally:
        server.cleanup()


def fill_users(url: str, rows: int, random_ids: bool) -> float:
    rid = "gen_random_uuid()::text" if random_ids else "'usr_' || lpad(i::text, 9, '0')"
    started = time.perf_counter()
    with db.connect(url, autocommit=True) as c:
        c.execute(f"""
            INSERT INTO users (id, email, name, role, active, created_at, updated_at)
            SELECT {rid}, 'user' || i || '@example.com', 'User Name ' || i,
                   (ARRAY['admin', 'author', 'reader'])[1 + i % 3], i % 5 <> 0,
                   timestamptz '2020-01-01' + i * interval '17 seconds',
                   timestamptz '2021-01-01' + i * interval '1.5 seconds'
            FROM generate_series(1, {int(rows)}) i""")
        c.execute("VACUUM ANALYZE users")
        c.execute("CHECKPOINT")
    return time.perf_counter() - started


def server_settings(url: str) -> dict[str, str]:
    names = ("server_version", "fsync", "synchronous_commit", "full_page_writes",
             "shared_buffers", "work_mem")
    settings: dict[str, str] = {}
    with db.connect(url) as c:
        for n in names:
            row = c.execute(f"SHOW {n}").fetchone()
            settings[n] = str(row[0]) if row else ""
    return settings


TICKS = os.sysconf("SC_CLK_TCK")


def backend_cpu(pids: list[int]) -> float:
    """CPU seconds used so far by PostgreSQL backends (user + system, from /proc)."""
    total = 0.0
    for pid in pids:
        with suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def stream_backends(url: str) -> list[int]:
    with db.connect(url, autocommit=True) as c:
        rows = c.execute("SELECT pid FROM pg_stat_activity WHERE application_name = "
                         "'bulkport-export-stream'").fetchall()
    return [r[0] for r in rows]


class Cpu:
    """CPU seconds of this process, a server process and PostgreSQL backends over a block."""

    def __init__(self, server: psutil.Process | None = None, backends: list[int] | None = None
                 ) -> None:
        self.server, self.backends = server, backends or []
        self.client = self.server_s = self.postgres = 0.0

    def _server(self) -> float:
        if self.server is None:
            return 0.0
        t = self.server.cpu_times()
        return float(t.user + t.system)

    def __enter__(self) -> Cpu:
        self._c, self._s, self._p = time.process_time(), self._server(), backend_cpu(
            self.backends)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client = time.process_time() - self._c
        self.server_s = self._server() - self._s
        self.postgres = backend_cpu(self.backends) - self._p


def raw_copy(url: str, fmt: str) -> tuple[float, int, Cpu]:
    with db.connect(url, autocommit=True) as c:
        pid = c.info.backend_pid
        size = 0
        with Cpu(backends=[pid]) as cpu:
            started = time.perf_counter()
            with c.cursor() as cur, cur.copy(RAW[fmt]) as copy:
                for data in copy:
                    size += len(data)
            seconds = time.perf_counter() - started
        return seconds, size, cpu


def http_export(base: str, fmt: str, server: psutil.Process, url: str
                ) -> tuple[float, int, Cpu]:
    # The standard library's HTTP/1.1 client: it de-chunks in buffered C reads,
    # where httpx/h11 spend ~5 ns per byte in Python on this machine.
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    size = 0
    try:
        with Cpu(server, stream_backends(url)) as cpu:
            started = time.perf_counter()
            conn.request("GET", f"/v1/exports?resource=users&format={fmt}",
                         headers={"Accept-Encoding": "identity"})
            r = conn.getresponse()
            if r.status != 200:
                raise RuntimeError(f"GET /v1/exports: {r.status} {r.read()[:500]!r}")
            while chunk := r.read(HTTP_CHUNK_BYTES):
                size += len(chunk)
            seconds = time.perf_counter() - started
    finally:
        conn.close()
    return seconds, size, cpu


def tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


class Sampler:
    """Peak of the RSS summed over a process tree, sampled in a thread."""

    def __init__(self, root: psutil.Process) -> None:
        self.root = root
        self.peak = 0
        self.processes = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()

    def _run(self) -> None:
        while not self.done.wait(SAMPLE_SECONDS):
            procs = tree(self.root)
            total = 0
            for p in procs:
                with suppress(psutil.Error):
                    total += p.memory_info().rss
            self.peak = max(self.peak, total)
            self.processes = max(self.processes, len(procs))


@contextmanager
def bulkport_server(url: str, work: Path, lanes: int | None = None,
                    ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    log = (work / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bulkport", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(work / "server-data"), "--database-url", url, "--workers", "0"],
        stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "BULKPORT_LOG_LEVEL": "WARNING",
             **({"BULKPORT_EXPORT_LANES": str(lanes)} if lanes else {})},
        start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited: see {work / 'server.log'}")
            with suppress(httpx.HTTPError):
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: see {work / 'server.log'}")
            time.sleep(0.2)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


Run = tuple[float, int, Cpu]


def measure(runs: int, raw: Callable[[], Run], http: Callable[[], Run]) -> dict[str, Any]:
    """Alternate raw and HTTP runs (so load changes hit both); medians of each."""
    raws, https = [], []
    for _ in range(runs):
        raws.append(raw())
        https.append(http())

    def summary(results: list[Run], side: str) -> dict[str, Any]:
        med = statistics.median
        out: dict[str, Any] = {
            "seconds": med(r[0] for r in results), "bytes": results[0][1],
            "runs": [round(r[0], 3) for r in results],
            "cpu_postgres": round(med(r[2].postgres for r in results), 2),
            "cpu_client": round(med(r[2].client for r in results), 2)}
        if side == "http":
            out["cpu_server"] = round(med(r[2].server_s for r in results), 2)
        return out

    return {"raw": summary(raws, "raw"), "http": summary(https, "http")}


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    with postgres(work) as (url, _):
        db.migrate(url)
        fill_seconds = fill_users(url, args.rows, args.random_ids)
        result: dict[str, Any] = {
            "bench": "export", "rows": args.rows,
            "ids": "random uuid" if args.random_ids else "insertion order",
            "repeat": args.repeat, "lanes": args.lanes or Settings().export_lanes,
            "fill_seconds": round(fill_seconds, 1)}
        with bulkport_server(url, work, args.lanes) as (base, proc):
            root = psutil.Process(proc.pid)
            raw_copy(url, "ndjson")  # warm the caches once, for both sides
            with Sampler(root) as sampler:
                for fmt in ("ndjson", "csv"):
                    m = measure(args.repeat, partial(raw_copy, url, fmt),
                                partial(http_export, base, fmt, root, url))
                    raw, http = m["raw"], m["http"]
                    raw_rate, http_rate = args.rows / raw["seconds"], args.rows / http["seconds"]
                    result[fmt] = {
                        "copy_seconds": round(raw["seconds"], 3),
                        "copy_rows_per_sec": round(raw_rate),
                        "copy_mib_per_sec": round(raw["bytes"] / MIB / raw["seconds"], 1),
                        "http_seconds": round(http["seconds"], 3),
                        "http_rows_per_sec": round(http_rate),
                        "http_mib_per_sec": round(http["bytes"] / MIB / http["seconds"], 1),
                        "ratio": round(http_rate / raw_rate, 3),
                        "copy_mib": round(raw["bytes"] / MIB, 1),
                        "http_mib": round(http["bytes"] / MIB, 1),
                        "copy_runs": raw["runs"], "http_runs": http["runs"],
                        "copy_cpu": {"postgres": raw["cpu_postgres"],
                                     "client": raw["cpu_client"]},
                        "http_cpu": {"postgres": http["cpu_postgres"],
                                     "server": http["cpu_server"],
                                     "client": http["cpu_client"]},
                    }
            result["peak_rss_bulkport_mib"] = round(sampler.peak / MIB, 1)
            result["bulkport_processes"] = sampler.processes
        result["cpus"] = os.cpu_count()
        result["load_avg_1m"] = round(os.getloadavg()[0], 2)
        result["postgres"] = server_settings(url)
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bulkport-bench-export-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        print(json.dumps(run(args, work)), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
