"""The API's PostgreSQL connection pools, and how a pooled connection is checked.

Two pools of up to ``BULKPORT_POOL_MAX_SIZE`` connections each:

* ``api``: a :class:`~psycopg_pool.ConnectionPool` for the handlers that run in
  the threadpool (creating and cancelling jobs, error pages and downloads,
  ``/health``, ``/metrics``);
* ``api-read``: an :class:`~psycopg_pool.AsyncConnectionPool` for the reads
  that clients poll (``GET /v1/imports/{id}``, ``GET /v1/imports``,
  ``GET /v1/exports/{id}``). Those handlers run on the event loop: a poll costs
  no thread hand-off, and 50 pollers do not queue for the 40 threads of the
  threadpool (bench/README.md, "Status reads").

A connection is checked before it is handed out, so that none of the
connections that died with a database restart fails a request. The check makes
no round trip when nothing arrived on the connection while it sat idle:
PostgreSQL closing a connection (a restart, ``pg_terminate_backend``) sends an
error message and closes the socket, which makes it readable. Only then does
the check send the pool's own probe (an empty query). A round trip per checkout
used to be a third of the work of a status read.
"""

from __future__ import annotations

import select
from typing import Any

import psycopg
from psycopg import pq
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from bulkport import db
from bulkport.config import Settings

#: Connection options of every API connection: UTC sessions, one statement per transaction.
CONNECTION_KWARGS: dict[str, Any] = {"options": db.CONNECT_OPTIONS, "autocommit": True}


def needs_probe(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
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
    """The ``check`` of the threaded pool: probe only a connection that may be dead."""
    if needs_probe(conn):
        ConnectionPool.check_connection(conn)


async def check_async(conn: psycopg.AsyncConnection[Any]) -> None:
    """The ``check`` of the async pool: probe only a connection that may be dead."""
    if needs_probe(conn):
        await AsyncConnectionPool.check_connection(conn)


def open_pool(url: str, settings: Settings) -> ConnectionPool[psycopg.Connection[Any]]:
    return ConnectionPool(url, min_size=settings.pool_min_size, max_size=settings.pool_max_size,
                          kwargs=CONNECTION_KWARGS, open=True, check=check, name="api")


async def open_read_pool(url: str, settings: Settings
                         ) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
        url, min_size=settings.pool_min_size, max_size=settings.pool_max_size,
        kwargs=CONNECTION_KWARGS, open=False, check=check_async, name="api-read")
    await pool.open()
    return pool
