"""``bulkport db status|stop``: the embedded PostgreSQL that ``serve`` leaves running.

``bulkport serve`` (and ``worker``, ``migrate``) start the pgserver PostgreSQL in
``DATA_DIR/pg`` when no ``BULKPORT_DATABASE_URL`` is set, and leave it running so
that workers and restarts find it (db.py). These commands read its
``postmaster.pid`` (pid, socket directory, state) without starting anything.

Stopping: ``pg_ctl stop`` refuses to run as root, and as root pgserver runs the
server as its own ``pgserver`` user. Signalling the postmaster needs neither:
SIGINT asks PostgreSQL for a *fast* shutdown (open sessions are rolled back,
a checkpoint is written, the server exits and removes ``postmaster.pid``),
which is what ``pg_ctl stop -m fast`` sends too. Root may signal any process,
and a non-root user runs the server as itself.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

#: How long ``db stop`` waits for the server to exit after asking (seconds).
STOP_TIMEOUT_SECONDS = 60.0
#: Exit code of ``db status`` when no server is running (as ``pg_ctl status``).
NOT_RUNNING = 3


@dataclass
class Embedded:
    """What ``postmaster.pid`` says about the server of a data directory."""

    pgdata: Path
    pid: int
    socket_dir: str
    port: str
    state: str

    @property
    def url(self) -> str:
        # As pgserver's PostmasterInfo.get_uri: trust authentication over the socket.
        return f"postgresql://postgres:@/postgres?host={self.socket_dir}"


def read_pidfile(pgdata: Path) -> Embedded | None:
    """The server described by ``pgdata/postmaster.pid`` if that process is alive."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None
    if pid <= 0:
        return None  # a standalone backend (initdb, single-user mode), not a server
    if not _is_postmaster(pid, pgdata):
        return None  # a stale file left by a crash (the pid may even be reused)
    # Lines: pid, data dir, start time, port, socket dir, listen address, shm, state.
    field = [line.strip() for line in lines] + [""] * 8
    return Embedded(pgdata=pgdata, pid=pid, port=field[3], socket_dir=field[4],
                    state=field[7] or "starting")


def _is_postmaster(pid: int, pgdata: Path) -> bool:
    import psutil  # here: every `bulkport` command imports this module to build its parser

    try:
        proc = psutil.Process(pid)
        return proc.name().startswith("postgres") and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def stop(pgdata: Path, timeout: float = STOP_TIMEOUT_SECONDS) -> Embedded | None:
    """Fast-shut the server of ``pgdata`` down and wait for it; ``None`` if none ran."""
    server = read_pidfile(pgdata)
    if server is None:
        return None
    try:
        os.kill(server.pid, signal.SIGINT)
    except ProcessLookupError:
        return server  # it exited on its own meanwhile
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _is_postmaster(server.pid, pgdata):
            return server
        time.sleep(0.1)
    raise TimeoutError(f"PostgreSQL (pid {server.pid}) did not stop within {timeout:g} s; "
                       f"see {pgdata / 'log'}")


def _pgdata(args: argparse.Namespace) -> Path | None:
    """The embedded server's directory, or ``None`` when an external database is set."""
    from bulkport.config import get_settings

    settings = get_settings()
    if settings.database_url:
        return None
    return (settings.data_dir / "pg").resolve()


def cmd_db(args: argparse.Namespace) -> None:
    pgdata = _pgdata(args)
    if pgdata is None:
        print("BULKPORT_DATABASE_URL is set: bulkport uses that database and does not "
              "manage it", file=sys.stderr)
        sys.exit(2)
    if args.action == "status":
        server = read_pidfile(pgdata)
        if server is None:
            print(f"embedded PostgreSQL: not running (data dir {pgdata})")
            sys.exit(NOT_RUNNING)
        print(f"embedded PostgreSQL: running ({server.state})\n"
              f"  pid:      {server.pid}\n  data dir: {pgdata}\n"
              f"  socket:   {server.socket_dir}/.s.PGSQL.{server.port or 5432}\n"
              f"  url:      {server.url}")
        return
    try:
        stopped = stop(pgdata)
    except TimeoutError as exc:
        print(f"bulkport: {exc}", file=sys.stderr)
        sys.exit(1)
    if stopped is None:
        print(f"embedded PostgreSQL: not running (data dir {pgdata}); nothing to stop")
    else:
        print(f"embedded PostgreSQL stopped (pid {stopped.pid}, data dir {pgdata})")


def add_db_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("db", help="status or stop of the embedded PostgreSQL (DATA_DIR/pg)",
                       description="The embedded PostgreSQL that `bulkport serve` starts in "
                                   "DATA_DIR/pg and leaves running for workers and restarts. "
                                   "`db status` exits 0 when it runs, 3 when it does not.")
    p.add_argument("action", choices=("status", "stop"))
    p.add_argument("--data-dir", type=Path, help="data directory (BULKPORT_DATA_DIR)")
    p.set_defaults(func=cmd_db)
