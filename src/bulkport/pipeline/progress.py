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

from bulkport.pipeline.types import Rejected
from bulkport.status import JobStatus


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended, for the runtime to record."""

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
    #: Error counts of the whole job so far (including this batch's).
    error_counts: dict[str, int]


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

    def commit_batch(self, conn: psycopg.Connection[Any] | None,
                     batch: BatchProgress) -> JobStatus:
        """Record the batch, its rejected records and checkpoint in ``conn``'s transaction.

        ``None``: on the runtime's own connection (a dry run, whose rows are rolled
        back). Returns the job's status (``cancelled``: stop after this batch);
        raises :class:`bulkport.errors.LeaseLost` when the job is no longer this
        run's, so that the caller's transaction rolls back.
        """
