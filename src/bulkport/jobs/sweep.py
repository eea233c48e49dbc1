"""Deleting stored files that their jobs no longer need.

One mechanism for both kinds of file: export files past their expiry, and the
uploads (or ``file_url`` downloads) of imports that ended more than
``UPLOAD_RETENTION_SECONDS`` ago (SPEC §5). A sweep takes the rows with
``FOR UPDATE SKIP LOCKED``, so instances sweeping at once never take the same
ones, deletes each file, then records it in the row, all in one transaction: a
file that could not be deleted keeps its row for the next sweep.

Rejected-record downloads never read the upload (``import_errors`` holds each
record as uploaded), so they are unaffected by the deletion.

Workers sweep from their loop, at most once per :data:`SWEEP_INTERVAL_SECONDS`
per process, and again after each job they ran; a sweep with nothing to do is
one query on a partial index per kind.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from bulkport.config import Settings
from bulkport.jobs.status import JobKind
from bulkport.jobs.store import MAX_PAGE, STORE
from bulkport.storage import Storage, StorageError, export_storage, upload_storage

log = logging.getLogger(__name__)

#: Longest time between two sweeps of a worker process (seconds).
SWEEP_INTERVAL_SECONDS = 60.0


def sweep(conn: psycopg.Connection[Any], kind: JobKind, storage: Storage, *,
          retention_seconds: float = 0) -> int:
    """Delete the files of ``kind`` jobs that may go; return how many went."""
    gone = 0
    while True:
        with conn.transaction():
            rows = STORE.expired_files(conn, kind, retention_seconds=retention_seconds)
            page = 0
            for row in rows:
                try:
                    storage.delete(row["file_key"])
                except (StorageError, OSError) as exc:
                    log.warning("could not delete %s file %s: %s", kind, row["file_key"], exc)
                    continue
                STORE.forget_file(conn, kind, row["id"], row["file_key"])
                page += 1
        gone += page
        if len(rows) < MAX_PAGE or page == 0:  # done, or every file refused: next sweep
            return gone


class Sweeper:
    """When the workers of one process sweep: once per interval, or when asked."""

    def __init__(self, settings: Settings, interval_seconds: float = SWEEP_INTERVAL_SECONDS
                 ) -> None:
        self.settings = settings
        self.interval_seconds = interval_seconds
        self._lock = threading.Lock()
        self._next = 0.0  # monotonic time of the next sweep; 0: at the first chance
        self._storages: tuple[Storage, Storage] | None = None

    def request(self) -> None:
        """Sweep at the next chance (a job just ended: its file may be due already)."""
        self._next = 0.0

    def maybe_sweep(self, connect: Callable[[], psycopg.Connection[Any]]) -> bool:
        """Sweep if it is time; True when this call swept."""
        with self._lock:
            now = time.monotonic()
            if now < self._next:
                return False
            self._next = now + self.interval_seconds
            if self._storages is None:  # built once: an S3 client is not free
                self._storages = (upload_storage(self.settings),
                                  export_storage(self.settings))
        uploads, exports = self._storages
        try:
            with connect() as conn:
                sweep(conn, JobKind.IMPORT, uploads,
                      retention_seconds=self.settings.upload_retention_seconds)
                sweep(conn, JobKind.EXPORT, exports)
        except psycopg.Error as exc:  # the claim that follows meets a dead database too
            log.warning("file sweep failed: %s", exc)
        return True
