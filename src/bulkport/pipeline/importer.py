"""The import pipeline for one job: file -> batches -> PostgreSQL, with exact counters.

Runs without a web server: give it a claimed job, connections, storage and the
runtime's :class:`~bulkport.pipeline.progress.ImportProgress`; it returns the
:class:`~bulkport.pipeline.progress.Outcome` for the runtime to record.

Exactly-once: each batch's rows, its rejected records and the job's checkpoint
and counters commit in one transaction, guarded by the lease owner. A job taken
over by another worker re-reads the file and skips the records up to the last
committed checkpoint.

Reading, validation and staging run in a producer thread while the consumer waits on
PostgreSQL (psycopg releases the GIL during network I/O), so Python and the
database work at the same time.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from itertools import dropwhile
from typing import IO, Any, Literal

import psycopg

from bulkport import metrics
from bulkport.config import Settings
from bulkport.errors import Terminal, UnreadableFile
from bulkport.pipeline import decompress, split
from bulkport.pipeline.batching import prefetch, take_batch
from bulkport.pipeline.load import Loader, load_rounds
from bulkport.pipeline.progress import BatchProgress, ImportProgress, Outcome, SourceFacts
from bulkport.pipeline.reading import Reading, open_reading
from bulkport.pipeline.stage import Stager, insert_defaults, prepare
from bulkport.pipeline.types import Mode, PreparedBatch, RawRecord, Rejected
from bulkport.pipeline.validate import RecordValidator
from bulkport.records import ImportJob
from bulkport.resources import get_resource
from bulkport.status import JobStatus
from bulkport.storage import Storage

log = logging.getLogger(__name__)

ConnFactory = Callable[[], psycopg.Connection[Any]]


@dataclass
class ImportRun:
    """Everything one run of one import job needs."""

    job: ImportJob
    settings: Settings
    storage: Storage
    connect: ConnFactory
    #: Where the run's progress goes, and whether it may go on.
    progress: ImportProgress
    error_counts: Counter[str] = field(default_factory=Counter)


def run_import(run: ImportRun) -> Outcome | None:
    """Process the job to its end; ``None`` when it stopped unfinished (handed back,
    cancelled or taken over)."""
    try:
        status = _run(run)
    except Terminal as exc:
        log.warning("import %s failed: %s", run.job.id, exc.message)
        return Outcome(JobStatus.FAILED, failure_reason=exc.message)
    return Outcome(status) if status is not None else None


def _run(run: ImportRun) -> JobStatus | None:
    job, settings, progress = run.job, run.settings, run.progress
    resource = get_resource(job.resource)
    file_key = job.file_key
    size = job.file_size_bytes
    if file_key is None:
        # Imported here: httpx costs every worker process ~10 MB it rarely needs.
        from bulkport.pipeline.fetch import DownloadStopped, fetch

        try:
            stored = fetch(job.source_url or "", run.storage, settings,
                           keep_going=progress.keep_going)
        except DownloadStopped:
            _log_stopped(run, "during the download")
            return None
        # A cancel between the last check and the end of the download: no batch was in
        # flight, so nothing of the file may be committed.
        if not progress.keep_going():
            run.storage.delete(stored.key)
            _log_stopped(run, "after the download")
            return None
        file_key, size = stored.key, stored.size
        progress.record_source(SourceFacts(format=job.format, columns=None, file_key=file_key,
                                           file_size_bytes=stored.size))
    with run.storage.open_read(file_key) as raw:
        stream = decompress.open_decompressed(raw, max_bytes=settings.max_decompressed_bytes)
        column_map = job.column_map
        reading = open_reading(stream, resource, declared_format=job.format,
                               file_name=job.file_name, delimiter=job.delimiter,
                               encoding=job.encoding, column_map=column_map,
                               max_line_bytes=settings.max_line_bytes)
        source = reading.source
        columns, records, fields = source.columns, source.records, reading.fields
        progress.record_source(SourceFacts(
            format=reading.format.value, columns=columns, file_key=file_key,
            file_size_bytes=job.file_size_bytes, delimiter=source.delimiter,
            encoding_hint=reading.encoding_hint))
        reading.check_required(resource)
        if _may_split(run, reading, gzip=stream is not raw, size=size):
            planned = _split(run, file_key, reading)
            if planned is not False:
                return planned
        if job.dry_run and job.checkpoint:
            progress.start_over()
            job = run.job = replace(job, checkpoint=0, bytes_processed=0, processed_records=0,
                                    successful_records=0, error_records=0, failed_batches=0,
                                    error_counts={})
        run.error_counts.update(job.error_counts or {})
        with run.connect() as data:
            mode = Mode(job.mode)
            loader = Loader(data, resource, mode)
            validator = RecordValidator(resource, columns, fields=fields, column_map=column_map,
                                        delimiter=source.delimiter or ",")
            stager = Stager(resource, mode, insert_defaults(data, resource))
            batches = prefetch(_prepare(records, validator, stager, raw, job.checkpoint,
                                         settings.batch_size))
            return _load_batches(run, batches, stager, loader, data)


def _may_split(run: ImportRun, reading: Reading, *, gzip: bool, size: int | None) -> bool:
    job = run.job
    reason = split.not_split_reason(
        size=size, min_bytes=run.settings.split_min_bytes, fmt=reading.format.value,
        codec=reading.encoding, declared_encoding=job.encoding, gzip=gzip,
        dry_run=job.dry_run, mode=job.mode, checkpoint=job.checkpoint)
    if reason is not None and size is not None and size >= run.settings.split_min_bytes > 0:
        log.info("import %s runs as one stream: %s", job.id, reason)
    return reason is None


def _split(run: ImportRun, file_key: str, reading: Reading) -> JobStatus | Literal[False] | None:
    """Plan the chunks and hand them to the queue (``processing``; ``None``: the job is
    no longer ours); False when the pass finds the file cannot be cut for sure."""
    job, settings = run.job, run.settings
    resource = get_resource(job.resource)
    with run.storage.open_read(file_key) as f:
        found = split.plan(f, resource, fmt=reading.format.value,
                           chunk_bytes=settings.chunk_bytes,
                           max_line_bytes=settings.max_line_bytes,
                           delimiter=reading.source.delimiter or ",", fields=reading.fields,
                           column_map=job.column_map)
    if found is None:
        log.info("import %s runs as one stream: no record boundaries to cut at for sure",
                 job.id)
        return False
    with run.connect() as data:
        defaults = insert_defaults(data, resource)
    if not run.progress.split(found, defaults):
        _log_stopped(run, "while planning its chunks")
        return None
    log.info("import %s split into %d chunks (%d records, %d hot values)", job.id,
             len(found.chunks), found.records, len(found.hot))
    return JobStatus.PROCESSING


def _log_stopped(run: ImportRun, when: str) -> None:
    why = "handed back" if run.progress.stop_requested() else "cancelled or taken over"
    log.info("import %s stopped %s: %s", run.job.id, when, why)


def _prepare(records: Iterator[RawRecord], validator: RecordValidator, stager: Stager,
             raw: IO[bytes], checkpoint: int, batch_size: int) -> Iterator[PreparedBatch]:
    """Read → validate → stage, batch by batch (in the producer thread)."""
    # Resume: skip the records that earlier runs committed.
    records = dropwhile(lambda r: r.row <= checkpoint, records)
    while chunk := take_batch(records, batch_size, raw):
        yield prepare(validator, stager, chunk, checkpoint=chunk[-1].row,
                      bytes_processed=raw.tell())




def _load_batches(run: ImportRun, batches: Iterator[PreparedBatch], stager: Stager,
                  loader: Loader, data: psycopg.Connection[Any]) -> JobStatus | None:
    """Commit batches; return the status to finish with, or None when stopped unfinished."""
    job = run.job
    dry_run = job.dry_run
    # A dry run loads everything in one transaction that is rolled back at the end, so
    # database checks see earlier batches; its bookkeeping commits on the runtime's
    # own connection.
    sink = None if dry_run else data
    totals = Counter({"successful": job.successful_records, "rejected": job.error_records,
                      "failed_batches": job.failed_batches})
    meter = metrics.JobMeter.for_job("import", job.row())
    with data.transaction(force_rollback=True) if dry_run else contextlib.nullcontext():
        for batch in batches:
            meter.start()
            with data.transaction():
                rejected = batch.rejected + load_rounds(loader, stager, batch)
                status = _commit(run, sink, batch, rejected)
            totals["successful"] += batch.size - len(rejected)
            totals["rejected"] += len(rejected)
            meter.done(batch.size, len(rejected))
            if status is JobStatus.CANCELLED:
                log.info("import %s cancelled at record %d", job.id, batch.checkpoint)
                return None
            if run.progress.stop_requested():
                log.info("import %s handed back at record %d", job.id, batch.checkpoint)
                return None
    if totals["successful"] + totals["rejected"] == 0:
        raise UnreadableFile("the file holds no records")
    if totals["rejected"]:
        return JobStatus.COMPLETED_WITH_ERRORS
    return JobStatus.COMPLETED


def _commit(run: ImportRun, conn: psycopg.Connection[Any] | None, batch: PreparedBatch,
            rejected: list[Rejected]) -> JobStatus:
    run.error_counts.update([e.code for rej in rejected for e in rej.errors])
    return run.progress.commit_batch(conn, BatchProgress(
        checkpoint=batch.checkpoint, bytes_processed=batch.bytes_processed,
        processed=batch.size, rejected=rejected, error_counts=dict(run.error_counts)))
