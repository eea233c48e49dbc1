"""The API's PostgreSQL connection pool, and how a pooled connection is checked.

A connection is checked before it is handed out, so that none of the
connections that died with a database restart fails a request. The check makes
no round trip when nothing arrived on the connection while it sat idle:
PostgreSQL closing a connection (a restart, ``pg_terminate_backend``) sends an
error message and closes the socket, which makes it readable. Only then does
the check send the pool's own probe (an empty query). A probe on every checkout
was a third of the round trips of a status read (bench/README.md, "Status
reads").
"""

from __future__ import annotations

import select
from typing import Any

import psycopg
from psycopg import pq
from psycopg_pool import ConnectionPool

from bulkport import db
from bulkport.config import Settings


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
    """The pool's ``check``: probe only a connection that may be dead."""
    if needs_probe(conn):
        ConnectionPool.check_connection(conn)


def open_pool(url: str, settings: Settings) -> ConnectionPool[psycopg.Connection[Any]]:
    return ConnectionPool(url, min_size=settings.pool_min_size, max_size=settings.pool_max_size,
                          kwargs={"options": db.CONNECT_OPTIONS, "autocommit": True},
                          open=True, check=check, name="api")
