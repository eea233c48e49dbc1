#!/usr/bin/env python3
"""Status-read benchmark: how many ``GET /v1/imports/{id}`` a real server answers.

One run:

1. starts a fresh embedded PostgreSQL and a real ``bulkport serve`` on it, rate
   limit off (``BULKPORT_RATE_LIMIT_PER_MINUTE=0``), with the PostgreSQL and
   server helpers of ``bench_import.py``;
2. imports a small generated users file with flaws (``--seed-rows``, 5%
   flawed), so the job being read carries its first 100 error entries, and
   runs a small export job (the target of ``--endpoint export``);
3. with ``--during-import``, uploads a generated ``--rows`` users file (5%
   flawed) and waits for the job to be processing: the reads then target that
   running job, as a console polling it would;
4. drives ``--clients`` concurrent keep-alive clients (asyncio; a bare HTTP/1.1
   client, see :class:`RawClient`, or httpx with ``--httpx``) against
   127.0.0.1 for ``--seconds`` after a short warm-up, each sending its next
   request as soon as the previous one is answered;
5. prints one JSON line: requests/s, p50/p99/max latency, non-200 answers, the
   CPU the client itself used (a saturated client caps the rate it can see)
   and the load average before and after (the machine may be shared).

``--endpoint`` picks the read: ``import`` (``GET /v1/imports/{id}``, default),
``list`` (``GET /v1/imports?limit=20``) or ``export`` (``GET /v1/exports/{id}``).

Usage: ``python bench/bench_status.py [--clients 50] [--seconds 10]
[--during-import --rows 1000000]`` (see bench/README.md, "Status reads").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from bench_import import (
    TERMINAL,
    bulkport_server,
    create_database,
    percentile,
    postgres,
    run_in_work_dir,
)

from bulkport.gen import GenConfig, build_mix, generate

#: Requests before the timed window, so connections and caches are warm (seconds).
WARMUP_SECONDS = 1.0
#: Share of flawed rows of the generated files: the status carries error entries.
FLAW_RATE = 0.05
#: Longest wait for a seed job, or for the big import to start (seconds).
JOB_TIMEOUT_SECONDS = 300
ENDPOINTS = ("import", "list", "export")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    p.add_argument("--seconds", type=float, default=10.0, help="timed window (default 10 s)")
    p.add_argument("--endpoint", choices=ENDPOINTS, default="import")
    p.add_argument("--during-import", action="store_true",
                   help="read while a --rows users import runs (reads target that job)")
    p.add_argument("--rows", type=int, default=1_000_000,
                   help="records of the --during-import file (default 1M)")
    p.add_argument("--seed-rows", type=int, default=2_000,
                   help="records of the finished job read on an idle server (default 2,000)")
    p.add_argument("--workers", type=int, default=4, help="server worker processes (default 4)")
    p.add_argument("--api-processes", type=int, default=None,
                   help="BULKPORT_API_PROCESSES of the server (default: the server's, 1)")
    p.add_argument("--httpx", action="store_true",
                   help="send the requests with httpx.AsyncClient instead of the bare client")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--work-dir", type=Path, default=None,
                   help="where files, PostgreSQL and the server's data go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    return p.parse_args(argv)


def users_file(work: Path, name: str, rows: int, seed: int) -> Path:
    """A generated users CSV with FLAW_RATE flawed rows."""
    generate(GenConfig(out_dir=work / name, seed=seed, users=rows, articles=0, comments=0,
                       mix=build_mix(FLAW_RATE)))
    return work / name / "users.csv"


def start_import(client: httpx.Client, path: Path) -> str:
    with path.open("rb") as f:
        resp = client.post("/v1/imports", data={"resource": "users"},
                           files={"file": (path.name, f, "text/csv")})
    if resp.status_code != 202:
        raise RuntimeError(f"POST /v1/imports answered {resp.status_code}: {resp.text}")
    return str(resp.json()["job_id"])


def wait_job(client: httpx.Client, path: str, until: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(path).json()
        if job["status"] in until:
            return job
        time.sleep(0.1)
    raise RuntimeError(f"{path} did not reach {sorted(until)} in {JOB_TIMEOUT_SECONDS} s")


class RawClient:
    """One keep-alive HTTP/1.1 connection sending bare GETs; reads ``Content-Length`` bodies.

    httpx's AsyncClient spends more CPU per request than the server does at these
    rates (against a bare ASGI app returning the same 10 KB body, on this 2-core
    machine: ~65 requests/s with 50 clients, against ~1,600 with this client), so
    with it the benchmark measured itself. The server's JSON answers always carry
    a Content-Length; anything else is an error here.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = next((int(v) for k, _, v in (ln.partition(b":") for ln in lines[1:])
                       if k.strip().lower() == b"content-length"), None)
        if length is None:
            raise RuntimeError(f"{path}: an answer without Content-Length: {head!r}")
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


async def drive(base: str, path: str, clients: int, seconds: float,
                use_httpx: bool = False) -> dict[str, Any]:
    """``clients`` closed-loop clients for WARMUP_SECONDS + ``seconds``; timed window only."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    url = httpx.URL(base)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits,
                                 timeout=httpx.Timeout(60.0)) as shared:
        loop = asyncio.get_running_loop()
        start = loop.time() + WARMUP_SECONDS
        end = start + seconds

        async def one_client() -> None:
            raw = RawClient(url.host, url.port or 80)
            try:
                while loop.time() < end:
                    t0 = loop.time()
                    if use_httpx:
                        status = (await shared.get(path)).status_code
                    else:
                        status, _ = await raw.get(path)
                    t1 = loop.time()
                    if start <= t1 <= end:  # answered inside the timed window
                        latencies.append(t1 - t0)
                        statuses[status] = statuses.get(status, 0) + 1
            finally:
                await raw.close()

        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        wall0 = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        wall = time.perf_counter() - wall0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {"latencies": latencies, "statuses": statuses,
            "client_cpu_pct": round(100 * cpu / wall, 1)}


#: In the command line of the API processes uvicorn starts (multiprocessing's spawn).
SPAWNED = "multiprocessing.spawn"


def api_processes(pid: int) -> list[psutil.Process]:
    """The processes answering HTTP: ``serve`` itself and, when it runs several API
    processes, uvicorn's (the job workers, ``bulkport.jobs.processes``, are not)."""
    serve = psutil.Process(pid)
    return [serve, *(p for p in serve.children() if SPAWNED in " ".join(p.cmdline()))]


def api_cpu_seconds(processes: list[psutil.Process]) -> float:
    """User + system CPU of ``processes`` so far."""
    return sum(t.user + t.system for t in (p.cpu_times() for p in processes))


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    seed_file = users_file(work, "seed", args.seed_rows, args.seed)
    big_file = users_file(work, "big", args.rows, args.seed) if args.during_import else None
    with postgres(work, args.keep) as (uri, _pgdata):
        url = create_database(uri, "bench_status")
        env = {"BULKPORT_RATE_LIMIT_PER_MINUTE": "0"}
        if args.api_processes is not None:
            env["BULKPORT_API_PROCESSES"] = str(args.api_processes)
        with bulkport_server(url, work, args.workers, None, env) as (base, proc), \
                httpx.Client(base_url=base, timeout=httpx.Timeout(600.0)) as http:
            seed_id = start_import(http, seed_file)
            wait_job(http, f"/v1/imports/{seed_id}", TERMINAL)
            resp = http.post("/v1/exports", json={"resource": "users", "format": "csv"})
            export_id = resp.json()["job_id"]
            wait_job(http, f"/v1/exports/{export_id}", TERMINAL)
            import_id = seed_id
            if big_file is not None:
                import_id = start_import(http, big_file)
                wait_job(http, f"/v1/imports/{import_id}", {"processing", *TERMINAL})
            path = {"import": f"/v1/imports/{import_id}", "list": "/v1/imports?limit=20",
                    "export": f"/v1/exports/{export_id}"}[args.endpoint]
            api = api_processes(proc.pid)
            load_before, cpu_before = os.getloadavg()[0], api_cpu_seconds(api)
            result = asyncio.run(drive(base, path, args.clients, args.seconds,
                                       args.httpx))
            load_after, cpu_after = os.getloadavg()[0], api_cpu_seconds(api)
            job = http.get(f"/v1/imports/{import_id}").json()
            body_bytes = len(http.get(path).content)
    lat_ms = [x * 1000 for x in result["latencies"]]
    ok = result["statuses"].get(200, 0)
    return {
        "bench": "status", "endpoint": args.endpoint, "path_template": {
            "import": "/v1/imports/{id}", "list": "/v1/imports?limit=20",
            "export": "/v1/exports/{id}"}[args.endpoint],
        "during_import": args.during_import, "rows": args.rows if args.during_import else None,
        "client": "httpx" if args.httpx else "raw", "clients": args.clients,
        "seconds": args.seconds, "requests": len(lat_ms),
        "requests_per_sec": round(len(lat_ms) / args.seconds, 1),
        "non_200": len(lat_ms) - ok,
        "p50_ms": round(percentile(lat_ms, 0.50), 1) if lat_ms else None,
        "p99_ms": round(percentile(lat_ms, 0.99), 1) if lat_ms else None,
        "max_ms": round(max(lat_ms), 1) if lat_ms else None,
        "body_bytes": body_bytes,
        # During an import: the job must still have been running when the window ended.
        "import_status_after": job["status"], "import_processed_after": job["processed_records"],
        # CPU of the API process per request (warm-up included, so slightly high):
        # less sensitive than requests/s to what else the machine runs.
        "server_cpu_ms_per_request": round(
            1000 * (cpu_after - cpu_before) / max(1, len(lat_ms)), 3),
        "api_processes": max(1, len(api) - 1),
        "client_cpu_pct": result["client_cpu_pct"],
        "load_avg_1m_before": round(load_before, 2), "load_avg_1m_after": round(load_after, 2),
        "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> None:
    run_in_work_dir(parse_args(argv), run, "bulkport-bench-status-")


if __name__ == "__main__":
    main()
