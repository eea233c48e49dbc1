"""The API's CPU per status read, with the app driven in-process (no HTTP).

``bench_status.py`` measures a real server over sockets, where uvicorn, the
client and everything else on the machine share the cores. This drives the
FastAPI app as an ASGI callable instead, ``--concurrency`` requests at a time,
on a real embedded PostgreSQL, and reports the CPU of this process (user +
system, the handler threads included) per read: the app's own cost, steadier
than requests/s on a shared machine. One run:

1. starts a fresh embedded PostgreSQL and a ``bulkport serve`` on it (the
   helpers of ``bench_import.py``), imports a generated 2,000-user file, 5%
   flawed (so the status carries 100 error entries), runs a small export, and
   stops the server;
2. creates the app on that database in this process, and for each read
   (import status, import list, export status) sends ``--warmup`` requests,
   then ``--requests`` timed ones; prints one JSON line per read and round.

Usage: ``python bench/bench_status_app.py [--requests 2000] [--rounds 2]``
(bench/README.md, "Status reads"). Put a copy of another ``src`` first on
``PYTHONPATH`` to measure that code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from bench_import import bulkport_server, create_database, postgres
from bench_status import TERMINAL, start_import, users_file, wait_job
from starlette.types import ASGIApp, Message

from bulkport.api.app import create_app
from bulkport.config import Settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=2000, help="timed reads per endpoint")
    p.add_argument("--warmup", type=int, default=200, help="untimed reads before them")
    p.add_argument("--concurrency", type=int, default=10, help="reads in flight at once")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seed-rows", type=int, default=2000)
    return p.parse_args(argv)


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def read(app: ASGIApp, target: str) -> tuple[int, int]:
    """One GET through the whole app; (status, body bytes)."""
    path, _, query = target.partition("?")
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(),
        "query_string": query.encode(), "root_path": "", "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80), "app": app}
    answer = {"status": 0, "bytes": 0}

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message["type"] == "http.response.body":
            answer["bytes"] += len(message.get("body", b""))

    await app(scope, receive, send)
    return answer["status"], answer["bytes"]


async def drive(app: ASGIApp, target: str, n: int, concurrency: int) -> tuple[int, int]:
    """``n`` reads, ``concurrency`` at a time; (non-200 answers, last body size)."""
    bad, size = 0, 0

    async def client(count: int) -> None:
        nonlocal bad, size
        for _ in range(count):
            status, size = await read(app, target)
            bad += status != 200

    await asyncio.gather(*(client(n // concurrency) for _ in range(concurrency)))
    return bad, size


async def measure(app: Any, targets: dict[str, str], args: argparse.Namespace,
                  rnd: int) -> None:
    async with app.router.lifespan_context(app):
        for name, target in targets.items():
            await drive(app, target, args.warmup, args.concurrency)
            n = args.requests - args.requests % args.concurrency
            cpu0, wall0 = cpu_seconds(), time.perf_counter()
            bad, size = await drive(app, target, n, args.concurrency)
            cpu1, wall1 = cpu_seconds(), time.perf_counter()
            print(json.dumps({
                "bench": "status_app", "read": name, "round": rnd, "requests": n,
                "non_200": bad, "body_bytes": size,
                "cpu_ms_per_read": round((cpu1 - cpu0) * 1000 / n, 3),
                "wall_ms_per_read": round((wall1 - wall0) * 1000 / n, 3),
                "load_avg_1m": round(os.getloadavg()[0], 2)}), flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bulkport-status-app-"))
    seed = users_file(work, "seed", args.seed_rows, 1)
    with postgres(work, False) as (uri, _pgdata):
        url = create_database(uri, "bench_status_app")
        with bulkport_server(url, work, 2, None) as (base, _proc), \
                httpx.Client(base_url=base, timeout=httpx.Timeout(600.0)) as http:
            import_id = start_import(http, seed)
            wait_job(http, f"/v1/imports/{import_id}", TERMINAL)
            resp = http.post("/v1/exports", json={"resource": "users", "format": "csv"})
            export_id = resp.json()["job_id"]
            wait_job(http, f"/v1/exports/{export_id}", TERMINAL)
        logging.getLogger("bulkport").setLevel(logging.WARNING)  # as the server bench runs
        app = create_app(Settings(data_dir=work / "app-data", rate_limit_per_minute=0), url)
        targets = {"import": f"/v1/imports/{import_id}", "list": "/v1/imports?limit=20",
                   "export": f"/v1/exports/{export_id}"}
        for rnd in range(args.rounds):
            asyncio.run(measure(app, targets, args, rnd))


if __name__ == "__main__":
    main()
