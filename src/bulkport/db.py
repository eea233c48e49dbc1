"""Where the database is and how to reach it.

With ``BULKPORT_DATABASE_URL`` unset, a private PostgreSQL from the ``pgserver``
package runs in ``DATA_DIR/pg`` (reached over a Unix socket, so it never takes
a TCP port). Durability settings stay at PostgreSQL's defaults.
"""

from __future__ import annotations

import logging
import os
import warnings
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any

import psycopg

from bulkport.config import Settings

log = logging.getLogger(__name__)

#: Arbitrary constant key of the advisory lock serialising migrations.
MIGRATION_LOCK_KEY = 0x62756C6B  # "bulk"

# Every session runs in UTC so that naive timestamps and text renderings agree.
CONNECT_OPTIONS = "-c TimeZone=UTC"

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


def migrate(url: str) -> list[str]:
    """Apply pending migrations; safe when several instances start together."""
    applied: list[str] = []
    with connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            for name, sql_text in _migration_files():
                if name in done:
                    continue
                with conn.transaction():
                    conn.execute(sql_text.encode())
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (name,))
                applied.append(name)
                log.info("applied migration %s", name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return applied


def _migration_files() -> list[tuple[str, str]]:
    folder = importlib_resources.files("bulkport") / "migrations"
    files = sorted(
        (p.name, p.read_text(encoding="utf-8")) for p in folder.iterdir() if p.name.endswith(".sql")
    )
    return files
