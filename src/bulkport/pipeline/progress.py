"""What a pipeline tells the job runtime, and what it returns to it.

The pipelines change no job state themselves: the job runtime
passes in an implementation of :class:`JobControl` (exports) or
:class:`ImportProgress` (imports), and records the :class:`Outcome` a run returns.
A run that returns ``None`` stopped unfinished: a graceful stop (the runtime hands
the job back), a cancel, or a lost lease.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import psycopg

from bulkport.pipeline.split import Plan
from bulkport.pipeline.types import Rejected
from bulkport.status import JobStatus


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended, for the runtime to record.

    ``processing``: the import was split into chunks (:meth:`ImportProgress.split`);
    the workers that claim its chunks finish it.
    """

    status: JobStatus
    failure_reason: str | None = None
    #: The file an export wrote (None for imports and failed exports).
    record_count: int | None = None
    file_key: str | None = None
    file_size_bytes: int | None = None
    expires_at: datetime | None = None
    #: Run when the outcome could not be recorded (the job was cancelled meanwhile):
    #: e.g. deleting the file just published.
    undo: Callable[[], None] | None = None


@dataclass(frozen=True, slots=True)
class SourceFacts:
    """What opening the file told: recorded with the job (None: leave as it is)."""

    format: str | None
    columns: Sequence[str] | None
    file_key: str | None
    file_size_bytes: int | None
    delimiter: str | None = None
    encoding_hint: str | None = None


@dataclass(frozen=True, slots=True)
class BatchProgress:
    """One committed batch: where the run stands after it, and what it counted."""

    checkpoint: int
    bytes_processed: int
    processed: int
    rejected: Sequence[Rejected]
    #: Error counts of the whole job so far (including this batch's); a chunk of a
    #: split import gives its batch's own counts, added up in the job.
    error_counts: dict[str, int]
    #: A chunk's records held back for the tail: ``(row, record as JSON)``.
    held: Sequence[tuple[int, bytes]] = ()


class JobControl(Protocol):
    """Asked between chunks of work."""

    def keep_going(self) -> bool:
        """Whether the job is still this run's to work on (renews its lease).

        False after a graceful stop was asked, a cancel, or a lost lease.
        """

    def stop_requested(self) -> bool:
        """Whether a graceful stop was asked (no database round trip)."""


class ImportProgress(JobControl, Protocol):
    """An import's progress, committed with its batches."""

    def record_source(self, facts: SourceFacts) -> None:
        """Record what opening the file told (format, columns, file, delimiter...)."""

    def start_over(self) -> None:
        """Forget the progress of earlier runs (a dry run cannot resume)."""

    def split(self, plan: Plan, defaults: Sequence[tuple[int, str]]) -> bool:
        """Store the plan of a split import and its chunks, for any worker to claim.

        ``defaults`` are the insert defaults evaluated once for the whole job. False
        when the job is no longer this run's.
        """

    def commit_batch(self, conn: psycopg.Connection[Any] | None,
                     batch: BatchProgress) -> JobStatus:
        """Record the batch, its rejected records and checkpoint in ``conn``'s transaction.

        ``None``: on the runtime's own connection (a dry run, whose rows are rolled
        back). Returns the job's status (``cancelled``: stop after this batch);
        raises :class:`bulkport.errors.LeaseLost` when the job is no longer this
        run's, so that the caller's transaction rolls back.
        """


class ChunkProgress(JobControl, Protocol):
    """A chunk's progress (a split import): its batches commit with the chunk's checkpoint."""

    def commit_batch(self, conn: psycopg.Connection[Any], batch: BatchProgress) -> JobStatus:
        """Record the batch (its rejected and held records, the chunk's checkpoint, the
        job's counters) in ``conn``'s transaction; the job's status (``cancelled``: stop).

        Raises :class:`bulkport.errors.LeaseLost` when the chunk is no longer this run's.
        """

    def held_records(self, after_row: int, limit: int) -> list[tuple[int, bytes]]:
        """The tail: held records ``(row, record as JSON)`` after ``after_row``, in row order."""
