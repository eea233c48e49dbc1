"""Where the database is, how to reach it, and the connection pools.

With ``BULKPORT_DATABASE_URL`` unset, a private PostgreSQL from the ``pgserver``
package runs in ``DATA_DIR/pg`` (reached over a Unix socket, so it never takes
a TCP port). Durability settings stay at PostgreSQL's defaults.

The API holds two kinds of pools (workers use plain connections, so
``psycopg_pool`` is imported only by the functions that open a pool):

* :func:`open_pool`, the API's pool. A connection is checked before it is
  handed out, so that none of the connections that died with a database
  restart fails a request. The check makes no round trip when nothing arrived
  on the connection while it sat idle: PostgreSQL closing a connection (a
  restart, ``pg_terminate_backend``) sends an error message and closes the
  socket, which makes it readable. Only then does the check send the pool's
  own probe (an empty query). A probe on every checkout was a third of the
  round trips of a status read (bench/README.md, "Status reads").
* :func:`open_stream_pool`, the streaming exports' pools: each stream holds
  one connection (or one per lane) while it runs.
"""

from __future__ import annotations

import logging
import os
import select
import warnings
from importlib import resources as importlib_resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import pq

from bulkport.config import Settings
from bulkport.sql import QUERIES
from bulkport.sql.exporting import SESSION_OPTIONS

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

#: Arbitrary constant key of the advisory lock serialising migrations.
MIGRATION_LOCK_KEY = 0x62756C6B  # "bulk"

# Every session runs in UTC so that naive timestamps and text renderings agree.
CONNECT_OPTIONS = "-c TimeZone=UTC"
#: How streaming-export connections show in ``pg_stat_activity``.
STREAM_APPLICATION_NAME = "bulkport-export-stream"

_embedded: Any = None


def database_url(settings: Settings) -> str:
    """Return the URL to connect to, starting the embedded server if none is configured."""
    if settings.database_url:
        return settings.database_url
    return start_embedded(settings.data_dir / "pg")


def start_embedded(pgdata: Path) -> str:
    """Start (or join) the embedded PostgreSQL in ``pgdata``; return its URL."""
    global _embedded
    os.environ.setdefault("XDG_RUNTIME_DIR", str(pgdata.parent))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this process, so that `bulkport worker`
    # processes and restarts find it; `bulkport db stop` stops it (bulkport.dbctl).
    _embedded = pgserver.get_server(pgdata, cleanup_mode=None)  # type: ignore[attr-defined]
    url: str = _embedded.get_uri()
    log.info("embedded PostgreSQL ready at %s", pgdata)
    return url


def connect(url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(url, options=CONNECT_OPTIONS, **kwargs)


def needs_probe(conn: psycopg.Connection[Any]) -> bool:
    """True when an idle connection may be dead: it is not OK, or data came in unasked."""
    pgconn = conn.pgconn
    if conn.closed or pgconn.status != pq.ConnStatus.OK:
        return True
    try:
        poller = select.poll()  # not select.select: descriptors above 1024 are fine
        poller.register(pgconn.socket, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError, psycopg.Error):
        return True


def check(conn: psycopg.Connection[Any]) -> None:
    """The API pool's ``check``: probe only a connection that may be dead."""
    if needs_probe(conn):
        from psycopg_pool import ConnectionPool

        ConnectionPool.check_connection(conn)


def open_pool(url: str, settings: Settings) -> ConnectionPool[psycopg.Connection[Any]]:
    """The API's pool (opened): job rows, status reads, previews."""
    from psycopg_pool import ConnectionPool

    return ConnectionPool(url, min_size=settings.pool_min_size, max_size=settings.pool_max_size,
                          kwargs={"options": CONNECT_OPTIONS, "autocommit": True},
                          open=True, check=check, name="api")


def open_stream_pool(url: str, max_size: int, name: str = "exports"
                     ) -> ConnectionPool[psycopg.Connection[Any]]:
    """A pool (not opened) of streaming exports: each stream holds one connection while it runs."""
    from psycopg_pool import ConnectionPool

    return ConnectionPool(
        url, min_size=0, max_size=max_size, open=False, name=name,
        kwargs={"options": SESSION_OPTIONS, "autocommit": True,
                "application_name": STREAM_APPLICATION_NAME},
    )


def migrate(url: str) -> list[str]:
    """Apply pending migrations; safe when several instances start together."""
    applied: list[str] = []
    with connect(url, autocommit=True) as conn:
        conn.execute(QUERIES["lock_migrations"], {"key": MIGRATION_LOCK_KEY})
        try:
            conn.execute(QUERIES["create_schema_migrations"])
            done = {r[0] for r in conn.execute(QUERIES["applied_migrations"])}
            for name, sql_text in _migration_files():
                if name in done:
                    continue
                with conn.transaction():
                    conn.execute(sql_text.encode())
                    conn.execute(QUERIES["record_migration"], {"version": name})
                applied.append(name)
                log.info("applied migration %s", name)
        finally:
            conn.execute(QUERIES["unlock_migrations"], {"key": MIGRATION_LOCK_KEY})
    return applied


def _migration_files() -> list[tuple[str, str]]:
    folder = importlib_resources.files("bulkport") / "migrations"
    files = sorted(
        (p.name, p.read_text(encoding="utf-8")) for p in folder.iterdir() if p.name.endswith(".sql")
    )
    return files
