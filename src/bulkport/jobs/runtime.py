"""Running one claimed job: its kind's pipeline, the progress it reports, its outcome.

:class:`RunProgress` is what the pipelines get to report through (the
:class:`~bulkport.pipeline.progress.ImportProgress` protocol): it writes through
:mod:`bulkport.jobs.service`, on a bookkeeping connection of its own unless a
batch brings its transaction. :func:`run_claimed` runs the pipeline and records
the :class:`~bulkport.pipeline.progress.Outcome` it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import psycopg

from bulkport.config import Settings
from bulkport.jobs import service
from bulkport.jobs.chunk_store import ChunkClaim
from bulkport.pipeline.progress import BatchProgress, Outcome, SourceFacts
from bulkport.pipeline.split import Plan
from bulkport.records import ExportJob, ImportJob, Job
from bulkport.status import JobKind, JobStatus
from bulkport.storage import ExportStorage, Storage, export_storage

ConnFactory = Callable[[], psycopg.Connection[Any]]


@dataclass
class RunProgress:
    """One run's channel to the job's state: the pipelines' ImportProgress/JobControl."""

    job_id: str
    owner: str
    lease_seconds: float
    connect: ConnFactory
    #: True once a graceful stop was asked (the worker's stopping event).
    stopping: Callable[[], bool] = lambda: False
    _book: psycopg.Connection[Any] | None = field(default=None, repr=False)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._book is not None:
            self._book.close()
            self._book = None

    def book(self) -> psycopg.Connection[Any]:
        """The bookkeeping connection (autocommit), opened once per run."""
        if self._book is None:
            self._book = self.connect()
        return self._book

    def stop_requested(self) -> bool:
        return self.stopping()

    def keep_going(self) -> bool:
        # A stop asked: the runtime hands the job back once the pipeline returned. A
        # cancelled job, or one another worker took over, is no longer renewable.
        if self.stopping():
            return False
        return service.renew(self.book(), self.job_id, self.owner,
                             self.lease_seconds) is not None

    def record_source(self, facts: SourceFacts) -> None:
        service.record_source(self.book(), self.job_id, self.owner, facts)

    def start_over(self) -> None:
        service.start_over(self.book(), self.job_id, self.owner)

    def split(self, plan: Plan, defaults: Sequence[tuple[int, str]]) -> bool:
        return service.split(self.book(), self.job_id, self.owner, plan, defaults,
                             self.lease_seconds)

    def commit_batch(self, conn: psycopg.Connection[Any] | None,
                     batch: BatchProgress) -> JobStatus:
        if conn is not None:
            return service.commit_batch(conn, self.job_id, self.owner, batch,
                                        self.lease_seconds)
        book = self.book()
        with book.transaction():
            return service.commit_batch(book, self.job_id, self.owner, batch,
                                        self.lease_seconds)


@dataclass
class Resources:
    """What runs of jobs share: settings, connections and the file storages."""

    settings: Settings
    connect: ConnFactory
    uploads: Storage
    #: None: built from the settings when an export runs (an S3 client costs memory).
    exports: ExportStorage | None = None


def _run_pipeline(job: Job, progress: RunProgress, res: Resources) -> Outcome | None:
    """The kind's pipeline; imported here, so a process loads only those it runs."""
    if isinstance(job, ImportJob):
        from bulkport.pipeline.importer import ImportRun, run_import

        return run_import(ImportRun(job=job, settings=res.settings, storage=res.uploads,
                                    connect=res.connect, progress=progress))
    assert isinstance(job, ExportJob)
    from bulkport.pipeline.export_job import ExportRun, run_export

    storage = res.exports or export_storage(res.settings)
    return run_export(ExportRun(job=job, settings=res.settings, storage=storage,
                                connect=res.connect, control=progress))


def run_claimed(job: Job, owner: str, res: Resources,
                stopping: Callable[[], bool] = lambda: False) -> JobStatus | None:
    """Run a job ``owner`` claimed and record its outcome; the status it ended with.

    ``None``: it stopped unfinished (handed back at a graceful stop, cancelled, or
    taken over), or was cancelled just before its outcome could be recorded.
    """
    with RunProgress(job.id, owner, res.settings.lease_seconds, res.connect,
                     stopping) as progress:
        outcome = _run_pipeline(job, progress, res)
        conn = progress.book()
        if outcome is not None and outcome.status is JobStatus.PROCESSING:
            return outcome.status  # split: the workers of its chunks finish it
        if outcome is None:
            service.stopped(conn, job.id, owner)
            return None
        if service.finish(conn, job.id, owner, outcome) is None:
            service.stopped(conn, job.id, owner)  # cancelled meanwhile
            if outcome.undo is not None:
                outcome.undo()
            return None
        return outcome.status


@dataclass
class ChunkRunProgress(RunProgress):
    """One chunk's channel (the pipelines' ChunkProgress): its lease, its batches."""

    seq: int = 0

    def keep_going(self) -> bool:
        if self.stopping():
            return False
        return service.renew_chunk(self.book(), self.job_id, self.seq, self.owner,
                                   self.lease_seconds) is not None

    def commit_batch(self, conn: psycopg.Connection[Any] | None,
                     batch: BatchProgress) -> JobStatus:
        assert conn is not None  # a chunk's batch always brings its transaction
        return service.commit_chunk_batch(conn, self.job_id, self.seq, self.owner, batch,
                                          self.lease_seconds)

    def held_records(self, after_row: int, limit: int) -> list[tuple[int, bytes]]:
        return service.held_records(self.book(), self.job_id, after_row, limit)


def run_chunk(claim: ChunkClaim, owner: str, res: Resources,
              stopping: Callable[[], bool] = lambda: False) -> ImportJob | None:
    """Run a chunk ``owner`` claimed; the job when this run finished it (the tail).

    A chunk that stopped unfinished is dropped when its job was cancelled, else
    handed back (a graceful stop).
    """
    from bulkport.pipeline.chunked import ChunkRun
    from bulkport.pipeline.chunked import run_chunk as run_chunk_pipeline

    seq = claim.work.seq
    with ChunkRunProgress(claim.job_id, owner, res.settings.lease_seconds, res.connect,
                          stopping, seq=seq) as progress:
        conn = progress.book()
        job = service.get(conn, JobKind.IMPORT, claim.job_id)
        done = run_chunk_pipeline(ChunkRun(job=job, work=claim.work, settings=res.settings,
                                           storage=res.uploads, connect=res.connect,
                                           progress=progress, owner=owner))
        if not done:
            service.chunk_stopped(conn, claim.job_id, seq, owner)
            return None
        if claim.work.is_tail:
            return service.finish_split(conn, claim.job_id, seq, owner)
        service.chunk_done(conn, claim.job_id, seq, owner)
        return None
