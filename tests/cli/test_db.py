"""``bulkport db status|stop`` on a real embedded PostgreSQL in a temporary data directory.

The server is started the way operators meet it: ``bulkport migrate`` starts the
embedded PostgreSQL and leaves it running, as ``serve`` does. As root (CI),
pgserver runs it as its own user, which is the case ``pg_ctl stop`` cannot handle.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from bulkport import dbctl
from tests.cli.conftest import bulkport, cli_env


@pytest.fixture
def data() -> Iterator[Path]:
    """A data directory outside pytest's ``tmp_path`` (as conftest's ``pg_url``).

    As root, pgserver opens the directory's parents to its ``pgserver`` user, and any
    pytest run starting meanwhile resets ``/tmp/pytest-of-root`` to mode 0700: initdb
    or pg_ctl then fail now and then.
    """
    tmp = Path(tempfile.mkdtemp(prefix="bulkport-test-db-"))
    try:
        yield tmp / "data"
    finally:
        dbctl.stop(tmp / "data" / "pg")
        shutil.rmtree(tmp, ignore_errors=True)


def test_status_and_stop_of_the_embedded_server(data: Path) -> None:
    pgdata = data / "pg"
    env = cli_env()  # no BULKPORT_DATABASE_URL: the embedded server
    opts = ("--data-dir", str(data))
    r = bulkport("db", "status", *opts, env=env)
    assert r.returncode == dbctl.NOT_RUNNING
    assert "not running" in r.stdout
    r = bulkport("migrate", *opts, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    r = bulkport("db", "status", *opts, env=env)
    assert r.returncode == 0, r.stderr
    pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    fields = {k.strip(): v.strip() for k, v in
              (line.split(": ", 1) for line in r.stdout.splitlines()[1:])}
    assert int(fields["pid"]) == pid
    assert Path(fields["data dir"]) == pgdata.resolve()
    assert fields["socket"].endswith("/.s.PGSQL.5432")
    # The URL printed reaches the server; the open session must not hold the stop up
    # (a fast shutdown ends sessions, a smart one would wait for them).
    held = psycopg.connect(fields["url"], autocommit=True)
    assert held.execute("SELECT 1").fetchone() == (1,)
    r = bulkport("db", "stop", *opts, env=env, timeout=90)
    assert r.returncode == 0, r.stderr
    assert f"stopped (pid {pid}" in r.stdout
    assert not _alive(pid)
    assert not (pgdata / "postmaster.pid").exists()
    with pytest.raises(psycopg.OperationalError):
        held.execute("SELECT 1")
    held.close()
    r = bulkport("db", "status", *opts, env=env)
    assert r.returncode == dbctl.NOT_RUNNING
    r = bulkport("db", "stop", *opts, env=env)
    assert r.returncode == 0 and "nothing to stop" in r.stdout


def test_db_commands_leave_an_external_database_alone(tmp_path: Path) -> None:
    env = cli_env(BULKPORT_DATABASE_URL="postgresql://example.invalid/db")
    r = bulkport("db", "stop", "--data-dir", str(tmp_path), env=env)
    assert r.returncode == 2
    assert "does not manage it" in r.stderr


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
