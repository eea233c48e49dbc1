"""What route handlers share: settings, the connection pool, storage."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from fastapi import Request
from psycopg_pool import ConnectionPool

from bulkport.api.first_errors import FirstErrorsCache
from bulkport.config import Settings
from bulkport.storage import Storage

#: Longest a request waits for a pooled connection (seconds). When the database is
#: down, waiting psycopg_pool's default 30 s only delays the 503 the client gets.
POOL_WAIT_SECONDS = 5.0


@dataclass
class AppState:
    settings: Settings
    url: str
    pool: ConnectionPool[psycopg.Connection[Any]]
    uploads: Storage
    #: Encoded first error entries of import jobs, between status reads.
    first_errors: FirstErrorsCache = field(default_factory=FirstErrorsCache)
    #: The threads of the polled status reads (``settings.status_threads``; see
    #: bulkport.api.status_route), apart from anyio's threadpool of the other routes.
    status_threads: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self.status_threads = ThreadPoolExecutor(self.settings.status_threads,
                                                 thread_name_prefix="bulkport-status")

    @contextmanager
    def conn(self) -> Iterator[psycopg.Connection[Any]]:
        with self.pool.connection(timeout=POOL_WAIT_SECONDS) as conn:
            yield conn


async def get_state(request: Request) -> AppState:
    # ``async``: FastAPI runs a plain ``def`` dependency in the threadpool, which cost
    # every request a thread hand-off (bench/README.md, "Status reads").
    state: AppState = request.app.state.bulkport
    return state
