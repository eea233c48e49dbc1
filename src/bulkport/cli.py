"""The ``bulkport`` command.

Server side (here): ``serve``, ``worker``, ``migrate``, ``gen``, and ``db status|stop``
(:mod:`bulkport.dbctl`). Client side, against a running server over HTTP
(:mod:`bulkport.client`): ``import``, ``export``, ``jobs``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bulkport.dbctl import add_db_command

log = logging.getLogger("bulkport")


def _apply_common(args: argparse.Namespace) -> None:
    """Command-line options override the environment (read by get_settings)."""
    if getattr(args, "data_dir", None):
        os.environ["BULKPORT_DATA_DIR"] = str(args.data_dir)
    if getattr(args, "database_url", None):
        os.environ["BULKPORT_DATABASE_URL"] = args.database_url
    if getattr(args, "workers", None) is not None:
        os.environ["BULKPORT_WORKERS"] = str(args.workers)


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from bulkport import db, interpreter
    from bulkport.api.app import create_app
    from bulkport.config import get_settings
    from bulkport.jobs.processes import WorkerPool
    from bulkport.logs import setup_logging

    settings = get_settings()
    setup_logging(settings.log_level, settings.log_format)
    # The reader threads of a split export take turns with each other and the event
    # loop; with the default 5 ms switch interval a reader whose rows have arrived
    # waits that long while PostgreSQL stalls on a full socket (bench/README.md).
    interpreter.set_switch_interval()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = db.database_url(settings)
    db.migrate(url)
    pool = WorkerPool(url, settings.workers, settings)
    pool.start()
    # uvicorn re-raises the signal that stopped it once it has shut down. With the
    # default SIGTERM action that killed this process on the spot, before
    # ``pool.stop()``: the workers were orphaned mid-job instead of finishing their
    # batch and handing the job back. Turn SIGTERM into SystemExit so ``finally`` runs.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # ws="none": the API has no WebSocket route, so the server need not load a
    # WebSocket implementation (memory held for nothing, bench/README.md).
    server: dict[str, Any] = {
        "host": args.host or settings.host, "port": args.port or settings.port,
        "log_config": None, "access_log": False, "timeout_graceful_shutdown": 10,
        "ws": "none"}
    try:
        if settings.api_processes > 1:
            # uvicorn's workers: processes started afresh (spawn) that share the
            # listening socket, each building the app with serve_app. They read their
            # settings from the environment, as this process did; the database URL
            # too, so that they join this database (migrated above) without starting one.
            os.environ["BULKPORT_DATABASE_URL"] = url
            uvicorn.run("bulkport.api.app:serve_app", factory=True,
                        workers=settings.api_processes, **server)
        else:
            app = create_app(settings, url)
            interpreter.freeze_startup_objects()
            uvicorn.run(app, **server)
    finally:
        pool.stop()


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the stop short
    raise SystemExit(0)


def cmd_worker(args: argparse.Namespace) -> None:
    from bulkport import db
    from bulkport.config import get_settings
    from bulkport.jobs.processes import WorkerPool
    from bulkport.logs import setup_logging

    settings = get_settings()
    setup_logging(settings.log_level, settings.log_format)
    url = db.database_url(settings)
    db.migrate(url)
    pool = WorkerPool(url, max(1, settings.workers), settings)
    pool.start()
    if settings.worker_metrics_port:
        from bulkport.metrics import serve_worker_metrics

        serve_worker_metrics(settings.host, settings.worker_metrics_port)
    stopped: list[int] = []

    def stop(signum: int, frame: Any) -> None:
        stopped.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopped:
        signal.pause()
    pool.stop()


def cmd_migrate(args: argparse.Namespace) -> None:
    from bulkport import db
    from bulkport.config import get_settings
    from bulkport.logs import setup_logging

    settings = get_settings()
    setup_logging(settings.log_level, settings.log_format)
    applied = db.migrate(db.database_url(settings))
    print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")


def cmd_gen(args: argparse.Namespace) -> None:
    from bulkport.gen import main as gen_main

    gen_main(args)


def build_parser(with_gen: bool = True, with_client: bool = True) -> argparse.ArgumentParser:
    """The parser; ``with_gen=False`` leaves out the generator's options (and its import,
    a sixth of a client command's start-up); ``with_client=False`` leaves out the client
    commands (and their HTTP client, memory a server process would hold for nothing)."""
    parser = argparse.ArgumentParser(
        prog="bulkport", description="Bulk import/export service: run the server (serve, "
        "worker, migrate, db) or use a running one (import, export, jobs).")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], None], help: str
            ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.set_defaults(func=func)
        p.add_argument("--data-dir", type=Path, help="data directory (BULKPORT_DATA_DIR)")
        p.add_argument("--database-url", help="PostgreSQL URL (BULKPORT_DATABASE_URL)")
        return p

    serve = add("serve", cmd_serve, "run the HTTP API and a pool of workers")
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (default 4)")
    worker = add("worker", cmd_worker, "run workers only, on the same database")
    worker.add_argument("--workers", type=int, help="worker processes (default 4)")
    add("migrate", cmd_migrate, "apply pending database migrations")
    add_db_command(sub)
    gen = sub.add_parser("gen", help="generate test data files with known flaws")
    gen.set_defaults(func=cmd_gen)
    if with_gen:
        try:
            from bulkport.gen import add_arguments
        except ImportError:  # pragma: no cover - generator not installed
            pass
        else:
            add_arguments(gen)
    if with_client:
        from bulkport.client.commands import add_client_commands

        add_client_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    server = bool(argv) and argv[0] in ("serve", "worker")
    args = build_parser(with_gen=not argv or argv[0] == "gen",
                        with_client=not server).parse_args(argv)
    _apply_common(args)
    if args.command in ("serve", "worker"):  # before anything imports prometheus_client
        from bulkport import multiprocess
        from bulkport.config import get_settings

        multiprocess.prepare(get_settings().data_dir, args.command)
    try:
        args.func(args)
    except KeyboardInterrupt:
        sys.exit(130)
