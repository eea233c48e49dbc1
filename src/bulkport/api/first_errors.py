"""The encoded first error entries of import jobs, kept between status reads.

``GET /v1/imports/{id}`` embeds a job's first 100 error entries. Decoding them
from ``jsonb`` and encoding them again was over a third of the API's CPU per
status read (bench/README.md, "Status reads"), for entries that only change
when a batch commits. The cache keeps, per job, the encoded entries with the
version of the job they were read at: ``(error_records, updated_at)``. Every
write of ``import_errors`` commits with an update of the job row that sets
``updated_at`` (``commit_import_batch``; ``reset_import_progress`` after the
errors of a dry run restarting are deleted), so an unchanged version means
unchanged errors, whatever order batches, rounds or retries wrote them in.
The status query sends the cached version and PostgreSQL reads the errors
only when the job's version differs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from bulkport.records import ImportJob

#: Jobs whose first errors are kept; at most ~10 KB each (100 entries).
MAX_JOBS = 1024


@dataclass(frozen=True)
class Cached:
    error_records: int
    updated_at: datetime
    encoded: orjson.Fragment


class FirstErrorsCache:
    """A bounded, thread-safe LRU of ``job id → Cached`` (handlers run in threads)."""

    def __init__(self, max_jobs: int = MAX_JOBS) -> None:
        self.max_jobs = max_jobs
        self._items: OrderedDict[str, Cached] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, job_id: str) -> Cached | None:
        with self._lock:
            item = self._items.get(job_id)
            if item is not None:
                self._items.move_to_end(job_id)
            return item

    def put(self, job_id: str, item: Cached) -> None:
        with self._lock:
            self._items[job_id] = item
            self._items.move_to_end(job_id)
            while len(self._items) > self.max_jobs:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)

    def resolve(self, job: ImportJob, rows: list[dict[str, Any]] | None, held: Cached | None,
                flatten: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
                limit: int) -> orjson.Fragment:
        """The job's encoded first ``limit`` entries: ``held``, or those just read.

        ``held`` is what :meth:`get` returned before the query (kept by the caller, so
        that an eviction in between cannot lose it). ``rows`` (the status query's first
        errors) is ``None`` when the query found ``held`` current, else the records
        just read.
        """
        if rows is None and held is not None:
            return held.encoded
        encoded = orjson.Fragment(orjson.dumps(flatten(rows or [])[:limit]))
        self.put(job.id, Cached(job.error_records, job.updated_at, encoded))
        return encoded


def known(held: Cached | None) -> dict[str, Any]:
    """The status query's parameters: the version of the errors held, if any."""
    return {"known_records": held.error_records if held else None,
            "known_updated_at": held.updated_at if held else None}
