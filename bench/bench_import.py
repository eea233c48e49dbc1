#!/usr/bin/env python3
"""Import benchmark: bulkport over HTTP against raw ``COPY``, on one fresh PostgreSQL.

One run:

1. generates the files with ``bulkport gen`` (a clean file for the baseline;
   with ``--flaw-rate`` also the flawed file of the same size for bulkport);
2. starts a fresh embedded PostgreSQL (pgserver, default settings: fsync,
   synchronous_commit and full_page_writes stay on) with two databases carrying
   bulkport's schema, so both sides have the same tables, constraints and indexes;
3. baseline: ``COPY <table> FROM STDIN (FORMAT csv, HEADER)`` of the clean
   file into the empty table, one transaction — the physical limit;
4. starts ``python -m bulkport serve`` on the other database, uploads the file
   with ``POST /v1/imports`` (multipart) and polls ``GET /v1/imports/{id}`` every
   ~100 ms until the job ends, timing each poll; a sampler adds up the RSS of
   the server and its worker processes every ~100 ms (PostgreSQL's processes
   are sampled apart);
5. prints one JSON line with every number, and checks the job's counters
   against the generator's expectation.

``--resource articles`` loads users first (untimed, by COPY, on both sides)
and times the articles, whose table has the foreign key to users.

``--client cli`` then also times the command-line client on the same server:
the table is emptied and the same file imported with ``bulkport import --wait
--json`` (a process, timed from its start to its exit, interpreter start-up
included), alternating with the HTTP path ``--repeat`` times; it reports the
CLI's rate against the HTTP path's in the same run (``cli_ratio_vs_api``).

Usage: ``python bench/bench_import.py [--rows N] [--flaw-rate 0.05]
[--resource users|articles] [--client api|cli [--repeat N]]`` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
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
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bulkport import db
from bulkport.gen import GenConfig, build_mix, generate

#: Sampling period of RSS and of the status polls (seconds).
SAMPLE_SECONDS = 0.1
POLL_SECONDS = 0.1
#: Longest wait for the server to answer /health (seconds).
START_TIMEOUT_SECONDS = 120
#: Chunk size of the baseline COPY stream (bytes).
COPY_CHUNK_BYTES = 1 << 20
TERMINAL = {"completed", "completed_with_errors", "failed", "cancelled"}
ARTICLE_COLUMNS = ("id", "slug", "title", "description", "body", "author_id", "tags",
                   "published_at", "status", "created_at", "updated_at")
USER_COLUMNS = ("id", "email", "name", "role", "active", "created_at", "updated_at")
MIB = 1024 * 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="records imported (default 1M)")
    p.add_argument("--resource", choices=("users", "articles"), default="users")
    p.add_argument("--flaw-rate", type=float, default=0.0,
                   help="share of flawed rows in the file bulkport imports (default 0: clean); "
                        "the baseline always copies the clean file of the same size")
    p.add_argument("--users", type=int, default=None,
                   help="users loaded before articles (default: rows / 10, at least 1,000)")
    p.add_argument("--workers", type=int, default=4, help="server worker processes (default 4)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="BULKPORT_BATCH_SIZE for the server (default: the server's default)")
    p.add_argument("--delimiter", choices=(",", ";", "tab", "|"), default=",",
                   help="users only: the generated CSV rewritten with this delimiter "
                        "(detected by the server from the header)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--work-dir", type=Path, default=None,
                   help="where files, PostgreSQL and the server's data go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--client", choices=("api", "cli"), default="api",
                   help="cli: also import through `bulkport import --wait --json` and "
                        "report its rate against the HTTP path's")
    p.add_argument("--repeat", type=int, default=1,
                   help="with --client cli: HTTP and CLI imports, alternating, each N times")
    return p.parse_args(argv)


# --- files ----------------------------------------------------------------------------


def make_files(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Generate the clean file (baseline) and the file bulkport imports."""
    users = args.users if args.users is not None else max(1_000, args.rows // 10)
    clean_mix = build_mix(0)
    started = time.perf_counter()
    if args.resource == "users":
        clean = generate(GenConfig(out_dir=work / "clean", seed=args.seed, users=args.rows,
                                   articles=0, comments=0, mix=clean_mix))
        files: dict[str, Any] = {"baseline": work / "clean" / "users.csv",
                                 "baseline_columns": USER_COLUMNS}
    else:
        clean = generate(GenConfig(out_dir=work / "clean", seed=args.seed, users=users,
                                   articles=args.rows, comments=0, mix=clean_mix))
        files = {"users": work / "clean" / "users.csv",
                 "baseline": ndjson_to_copy_csv(work / "clean" / "articles.ndjson",
                                                work / "clean" / "articles.copy.csv"),
                 "baseline_columns": ARTICLE_COLUMNS}
    name = "users.csv" if args.resource == "users" else "articles.ndjson"
    if args.flaw_rate > 0:
        mix = build_mix(args.flaw_rate)
        if args.resource == "articles":
            mix["users"] = clean_mix["users"]  # the same clean users as the baseline's
        flawed = generate(GenConfig(out_dir=work / "flawed", seed=args.seed,
                                    users=args.rows if args.resource == "users" else users,
                                    articles=0 if args.resource == "users" else args.rows,
                                    comments=0, mix=mix))
        files["import"] = work / "flawed" / name
        files["expected"] = flawed[args.resource]
    else:
        files["import"] = work / "clean" / name
        files["expected"] = clean[args.resource]
    if args.delimiter != ",":
        if args.resource != "users":
            raise SystemExit("--delimiter applies to the users CSV only")
        files["import"] = rewrite_delimited(files["import"], work / "delimited" / "users.csv",
                                            "\t" if args.delimiter == "tab" else args.delimiter)
    files["users_count"] = users if args.resource == "articles" else 0
    files["gen_seconds"] = round(time.perf_counter() - started, 2)
    return files


def rewrite_delimited(src: Path, dst: Path, delimiter: str) -> Path:
    """The CSV file ``src`` with another delimiter (quoting as RFC 4180 needs it)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with src.open(encoding="utf-8", newline="") as fin, \
            dst.open("w", encoding="utf-8", newline="") as fout:
        csv.writer(fout, delimiter=delimiter, lineterminator="\n").writerows(csv.reader(fin))
    return dst


def ndjson_to_copy_csv(src: Path, dst: Path) -> Path:
    """Articles NDJSON -> CSV in PostgreSQL's own format (tags as an array literal)."""
    with src.open("rb") as fin, dst.open("w", encoding="utf-8", newline="") as fout:
        w = csv.writer(fout, lineterminator="\n")
        w.writerow(ARTICLE_COLUMNS)
        for line in fin:
            rec = orjson.loads(line)
            tags = rec.get("tags") or []
            rec["tags"] = "{" + ",".join(f'"{t}"' for t in tags) + "}"
            w.writerow([rec.get(c) for c in ARTICLE_COLUMNS])  # None -> unquoted empty = NULL
    return dst


# --- PostgreSQL -----------------------------------------------------------------------


@contextmanager
def postgres(work: Path, keep: bool) -> Iterator[tuple[str, Path]]:
    """A fresh embedded PostgreSQL; yields (server URI, data directory)."""
    os.environ.setdefault("XDG_RUNTIME_DIR", str(work))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    pgdata = work / "pg"
    server = pgserver.get_server(  # type: ignore[attr-defined]
        pgdata, cleanup_mode="stop" if keep else "delete")
    try:
        yield server.get_uri(), pgdata
    finally:
        server.cleanup()


def create_database(uri: str, name: str) -> str:
    with psycopg.connect(uri, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(uri, dbname=name)
    db.migrate(url)
    return url


def server_settings(url: str) -> dict[str, str]:
    names = ("server_version", "fsync", "synchronous_commit", "full_page_writes",
             "shared_buffers", "max_wal_size", "wal_level")
    settings = {}
    with psycopg.connect(url) as c:
        for n in names:
            row = c.execute(sql.SQL("SHOW {}").format(sql.Identifier(n))).fetchone()
            settings[n] = str(row[0]) if row else ""
    return settings


def copy_file(url: str, table: str, columns: tuple[str, ...], path: Path) -> float:
    """``COPY table FROM STDIN (FORMAT csv, HEADER)`` in one transaction; seconds taken."""
    stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, HEADER)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns)))
    with psycopg.connect(url) as c:
        started = time.perf_counter()
        with c.cursor().copy(stmt) as copy, path.open("rb") as f:
            while chunk := f.read(COPY_CHUNK_BYTES):
                copy.write(chunk)
        c.commit()
        return time.perf_counter() - started


def checkpoint(url: str) -> None:
    """Flush dirty pages so the next phase does not pay for the previous one."""
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CHECKPOINT")


def count_rows(url: str, table: str) -> int:
    with psycopg.connect(url) as c:
        row = c.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        found = row.fetchone()
        return int(found[0]) if found else 0


# --- processes and memory -------------------------------------------------------------


def tree_rss(root: psutil.Process) -> int:
    """RSS of a process and all its descendants (bytes); vanished processes count 0."""
    total = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        with suppress(psutil.Error):
            total += p.memory_info().rss
    return total


class Sampler:
    """Peak summed RSS of the bulkport process tree and of PostgreSQL's, every ~100 ms."""

    def __init__(self, pg_root: psutil.Process) -> None:
        self.pg_root = pg_root
        self.bulkport_root: psutil.Process | None = None
        self.peak_bulkport = 0
        self.peak_postgres = 0
        self.max_bulkport_procs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.sample()

    def sample(self) -> None:
        self.peak_postgres = max(self.peak_postgres, tree_rss(self.pg_root))
        root = self.bulkport_root
        if root is not None:
            self.peak_bulkport = max(self.peak_bulkport, tree_rss(root))
            with_children = 1 + len(_children(root))
            self.max_bulkport_procs = max(self.max_bulkport_procs, with_children)


def _children(p: psutil.Process) -> list[psutil.Process]:
    try:
        return list(p.children(recursive=True))
    except psutil.Error:
        return []


def postmaster(pgdata: Path) -> psutil.Process:
    pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    return psutil.Process(pid)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def bulkport_server(url: str, work: Path, workers: int, batch_size: int | None,
                    extra_env: dict[str, str] | None = None,
                    ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {**os.environ, "BULKPORT_LOG_LEVEL": "WARNING", **(extra_env or {})}
    env.pop("BULKPORT_DATABASE_URL", None)
    if batch_size:
        env["BULKPORT_BATCH_SIZE"] = str(batch_size)
    log = (work / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bulkport", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(work / "server-data"), "--database-url", url,
         "--workers", str(workers)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited: see {work / 'server.log'}")
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: see {work / 'server.log'}")
            time.sleep(0.2)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


# --- the import over HTTP -------------------------------------------------------------


def import_over_http(base: str, path: Path, resource: str) -> dict[str, Any]:
    """Upload, then poll every ~100 ms until the job ends; times and latencies."""
    latencies: list[float] = []
    with httpx.Client(base_url=base, timeout=httpx.Timeout(600.0)) as client:
        started = time.perf_counter()
        with path.open("rb") as f:
            resp = client.post("/v1/imports", data={"resource": resource},
                               files={"file": (path.name, f, "application/octet-stream")})
        uploaded = time.perf_counter()
        if resp.status_code != 202:
            raise RuntimeError(f"POST /v1/imports answered {resp.status_code}: {resp.text}")
        job_id = resp.json()["job_id"]
        while True:
            t0 = time.perf_counter()
            r = client.get(f"/v1/imports/{job_id}")
            t1 = time.perf_counter()
            latencies.append(t1 - t0)
            job: dict[str, Any] = r.json()
            if job["status"] in TERMINAL:
                ended = t1
                break
            time.sleep(max(0.0, POLL_SECONDS - (t1 - t0)))
    return {"job": job, "seconds": ended - started, "upload_seconds": uploaded - started,
            "latencies": latencies}


def import_over_cli(base: str, path: Path, resource: str) -> dict[str, Any]:
    """``bulkport import FILE --wait --json`` as a process; its job and wall time."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "bulkport", "import", str(path), "--resource", resource,
         "--wait", "--json", "--url", base], capture_output=True, text=True, check=False)
    ended = time.perf_counter()
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"bulkport import exited {proc.returncode}: {proc.stderr.strip()}")
    return {"job": json.loads(proc.stdout), "seconds": ended - started}


def outside_job(result: dict[str, Any]) -> float:
    """The client's share of an import: its wall time less the job's own life
    (``created_at`` -> ``completed_at``, the server's clock): the upload, start-up,
    and seeing the end. Unlike the wall time it hardly depends on the server's speed."""
    from datetime import datetime

    job = result["job"]
    life = datetime.fromisoformat(job["completed_at"]) - datetime.fromisoformat(job["created_at"])
    return float(result["seconds"] - life.total_seconds())


def empty_table(url: str, table: str) -> None:
    """Drop what an import loaded (and its rejected records) before the next one."""
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(sql.SQL("TRUNCATE {}, import_errors CASCADE").format(sql.Identifier(table)))
    checkpoint(url)


def compare_cli(args: argparse.Namespace, url: str, base: str, first_api: dict[str, Any],
                expected: dict[str, Any], path: Path) -> dict[str, Any]:
    """Alternate CLI and HTTP imports of the same file; their rates and the ratio."""
    api_seconds = [first_api["seconds"]]
    api_outside = [outside_job(first_api)]
    cli_seconds: list[float] = []
    cli_outside: list[float] = []
    matches = True
    for i in range(args.repeat):
        if i:
            empty_table(url, args.resource)
            api = import_over_http(base, path, args.resource)
            api_seconds.append(api["seconds"])
            api_outside.append(outside_job(api))
        empty_table(url, args.resource)
        result = import_over_cli(base, path, args.resource)
        cli_seconds.append(result["seconds"])
        cli_outside.append(outside_job(result))
        job = result["job"]
        matches = matches and (job["successful_records"] == expected["successful"]
                               and job["error_records"] == expected["rejected"]
                               and job["error_counts"] == expected["error_counts"])
    api_rate = args.rows / statistics.median(api_seconds)
    cli_rate = args.rows / statistics.median(cli_seconds)
    return {"api_runs_seconds": [round(x, 2) for x in api_seconds],
            "cli_runs_seconds": [round(x, 2) for x in cli_seconds],
            "api_rows_per_sec": round(api_rate), "cli_rows_per_sec": round(cli_rate),
            "cli_ratio_vs_api": round(cli_rate / api_rate, 3),
            "api_outside_job_seconds": [round(x, 2) for x in api_outside],
            "cli_outside_job_seconds": [round(x, 2) for x in cli_outside],
            "cli_matches_expected": matches}


def percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def job_seconds(job: dict[str, Any]) -> float | None:
    from datetime import datetime

    if not job.get("started_at") or not job.get("completed_at"):
        return None
    start = datetime.fromisoformat(job["started_at"])
    end = datetime.fromisoformat(job["completed_at"])
    return (end - start).total_seconds()


# --- main -----------------------------------------------------------------------------


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    files = make_files(args, work)
    table = args.resource
    with postgres(work, args.keep) as (uri, pgdata):
        sampler = Sampler(postmaster(pgdata)).start()
        try:
            copy_url = create_database(uri, "bench_copy")
            bulk_url = create_database(uri, "bench_bulkport")
            settings = server_settings(copy_url)
            if args.resource == "articles":
                for url in (copy_url, bulk_url):
                    copy_file(url, "users", USER_COLUMNS, files["users"])
                    checkpoint(url)
            # Baseline: raw COPY of the clean file.
            sampler.peak_postgres = 0
            copy_seconds = copy_file(copy_url, table, files["baseline_columns"],
                                     files["baseline"])
            copy_pg_peak = sampler.peak_postgres
            if count_rows(copy_url, table) != args.rows:
                raise RuntimeError("the baseline COPY did not load every row")
            checkpoint(copy_url)
            # bulkport: the real server over HTTP.
            with bulkport_server(bulk_url, work, args.workers, args.batch_size) as (base, proc):
                sampler.bulkport_root = psutil.Process(proc.pid)
                sampler.sample()
                sampler.peak_postgres = 0
                sampler.peak_bulkport = 0
                result = import_over_http(base, files["import"], args.resource)
                cli = (compare_cli(args, bulk_url, base, result, files["expected"],
                                   files["import"]) if args.client == "cli" else {})
                sampler.sample()
                bulk_pg_peak = sampler.peak_postgres
                bulk_peak = sampler.peak_bulkport
                procs = sampler.max_bulkport_procs
        finally:
            sampler.stop()
    job = result["job"]
    expected = files["expected"]
    copy_rate = args.rows / copy_seconds
    bulk_rate = job["processed_records"] / result["seconds"]
    lat_ms = [x * 1000 for x in result["latencies"]]
    processing = job_seconds(job)
    return {
        "bench": "import", "resource": args.resource, "rows": args.rows,
        "flaw_rate": args.flaw_rate, "delimiter": args.delimiter, "workers": args.workers,
        "batch_size": args.batch_size, "users_preloaded": files["users_count"],
        "file_mib": round(files["import"].stat().st_size / MIB, 1),
        "copy_seconds": round(copy_seconds, 2), "copy_rows_per_sec": round(copy_rate),
        "copy_input": "clean file",
        "bulkport_seconds": round(result["seconds"], 2),
        "bulkport_rows_per_sec": round(bulk_rate),
        "ratio_vs_copy": round(bulk_rate / copy_rate, 3),
        "upload_seconds": round(result["upload_seconds"], 2),
        "job_seconds": round(processing, 2) if processing else None,
        "job_rows_per_sec": round(job["processed_records"] / processing) if processing else None,
        "status": job["status"], "successful": job["successful_records"],
        "rejected": job["error_records"],
        "matches_expected": (job["successful_records"] == expected["successful"]
                             and job["error_records"] == expected["rejected"]
                             and job["error_counts"] == expected["error_counts"]),
        "peak_rss_bulkport_mib": round(bulk_peak / MIB, 1),
        "bulkport_processes": procs,
        "peak_rss_postgres_mib": round(bulk_pg_peak / MIB, 1),
        "peak_rss_postgres_copy_mib": round(copy_pg_peak / MIB, 1),
        "status_polls": len(lat_ms),
        "status_p50_ms": round(percentile(lat_ms, 0.50), 1),
        "status_p99_ms": round(percentile(lat_ms, 0.99), 1),
        "status_max_ms": round(max(lat_ms), 1),
        "gen_seconds": files["gen_seconds"],
        **cli,
        "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
        "postgres": settings,
    }


def run_in_work_dir(args: argparse.Namespace, run: Callable[[argparse.Namespace, Path], Any],
                    prefix: str) -> None:
    """Run one benchmark in ``--work-dir`` (else a temporary one, removed unless ``--keep``)
    and print its result as one JSON line: the shared ``main`` of the bench scripts."""
    work = args.work_dir or Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = run(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> None:
    run_in_work_dir(parse_args(argv), run, "bulkport-bench-")


if __name__ == "__main__":
    main()
