"""One chunk of a split import, or its tail: read → validate → hold back → stage → load.

A chunk reads its byte range of the stored file (``storage.open_read(key, start,
end)``) with the header the job recorded, numbers its records after the chunk's
``first_row`` (so every row equals the one-stream row), skips the records up to
its checkpoint, and commits batch by batch like the one-stream importer: the
batch's rows, rejected records, held records, the chunk's checkpoint and the
job's counters in one transaction, guarded by the chunk's owner.

Held records (:class:`Holder`) are the valid records whose id or natural key hash
is hot (found in more than one chunk, :mod:`bulkport.pipeline.split`), and every
later record of the chunk sharing a hash with one held before. The tail loads
them, in row order, with the same validator, stager and loader, once every chunk
is done. docs/imports.md ("Chunked imports") argues why the outcome is the one
of a single stream.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import dropwhile, islice
from typing import IO, Any
from zlib import crc32

import orjson
import psycopg

from bulkport import metrics
from bulkport.config import Settings
from bulkport.pipeline.batching import prefetch, take_batch
from bulkport.pipeline.csvreader import read_csv_body
from bulkport.pipeline.headers import match_columns
from bulkport.pipeline.importer import ConnFactory
from bulkport.pipeline.keyhash import KeyHasher
from bulkport.pipeline.load import Loader, load_rounds
from bulkport.pipeline.ndjson import read_ndjson
from bulkport.pipeline.progress import BatchProgress, ChunkProgress
from bulkport.pipeline.split import ChunkWork
from bulkport.pipeline.stage import Stager, prepare
from bulkport.pipeline.types import Mode, PreparedBatch, RawRecord, ValidRecord
from bulkport.pipeline.validate import RecordValidator
from bulkport.records import ImportJob
from bulkport.resources import get_resource
from bulkport.resources.base import Resource
from bulkport.resources.compile import copy_unescape
from bulkport.status import JobStatus
from bulkport.storage import Storage

log = logging.getLogger(__name__)

#: Held records read per query by the tail.
HELD_PAGE = 5_000


@dataclass
class ChunkRun:
    job: ImportJob
    work: ChunkWork
    settings: Settings
    storage: Storage
    connect: ConnFactory
    progress: ChunkProgress
    #: The worker running the chunk (its lease owner), named in the log.
    owner: str


class Holder:
    """Decides which valid records of a chunk wait for the tail."""

    def __init__(self, resource: Resource, hot: frozenset[int]) -> None:
        self.hasher = KeyHasher(resource)
        self.hot = hot
        #: The hot hashes and those of the records this chunk held: a record having
        #: one waits (later sharers of a held record wait too: the closure).
        self.watch: set[int] = set(hot)
        names = resource.column_names
        key = resource.natural_key
        self._key_index = names.index(key[0]) if len(key) == 1 else None

    def split(self, valid: list[ValidRecord]) -> tuple[list[ValidRecord], list[ValidRecord]]:
        """``(loaded now, held)``, each in file order."""
        if not self.hot:
            return valid, []
        keep: list[ValidRecord] = []
        held: list[ValidRecord] = []
        watch, ki = self.watch, self._key_index
        if ki is None:  # no key, or a composite one: the general path
            for rec in valid:
                hs = self.hasher.valid_hashes(rec.values)
                if any(h in watch for h in hs):
                    watch.update(hs)
                    held.append(rec)
                else:
                    keep.append(rec)
            return keep, held
        # One-field key (the hot path, once per valid record): KeyHasher.valid_hashes
        # inlined, the same normalisation (keyhash._norm) and hash (CRC-32).
        for rec in valid:
            values = rec.values
            rid, key = values[0], values[ki]
            a = crc32(rid.strip().lower().encode("utf-8", "surrogateescape")) if rid else -1
            if key:
                if "\\" in key:
                    key = copy_unescape(key)
                key = key.strip().lower()
            b = crc32(key.encode("utf-8", "surrogateescape")) if key else -1
            if a in watch or b in watch:
                watch.update([h for h in (a, b) if h >= 0])
                held.append(rec)
            else:
                keep.append(rec)
        return keep, held


def run_chunk(run: ChunkRun) -> bool:
    """Process the chunk to its end: True when done, False when it stopped unfinished
    (cancelled, handed back); :class:`~bulkport.errors.LeaseLost` when taken over."""
    job, work = run.job, run.work
    resource = get_resource(job.resource)
    columns = job.columns
    fields = match_columns(columns, resource, job.column_map) if columns is not None else None
    validator = RecordValidator(resource, columns, fields=fields, column_map=job.column_map,
                                delimiter=job.delimiter or ",")
    stager = Stager(resource, Mode.INSERT, work.defaults)
    with run.connect() as data:
        loader = Loader(data, resource, Mode.INSERT)
        if work.is_tail:
            batches = prefetch(_tail_batches(run, validator, stager))
            return _load(run, batches, stager, loader, data)
        assert job.file_key is not None
        with run.storage.open_read(job.file_key, work.start_byte, work.end_byte) as raw:
            holder = Holder(resource, work.hot)
            batches = prefetch(_chunk_batches(run, raw, validator, stager, holder))
            return _load(run, batches, stager, loader, data)


def read_chunk(raw: IO[bytes], *, fmt: str | None, columns: Sequence[str] | None,
               delimiter: str | None, first_row: int, max_line_bytes: int
               ) -> Iterator[RawRecord]:
    """The records of one chunk's byte range, numbered as in the whole file."""
    if fmt == "csv":
        records = read_csv_body(raw, columns or [], delimiter or ",", max_line_bytes)
    else:
        records = read_ndjson(raw, max_line_bytes)
    for rec in records:
        rec.row += first_row
        yield rec


def _records(run: ChunkRun, raw: IO[bytes]) -> Iterator[RawRecord]:
    job = run.job
    return read_chunk(raw, fmt=job.format, columns=job.columns, delimiter=job.delimiter,
                      first_row=run.work.first_row,
                      max_line_bytes=run.settings.max_line_bytes)


def _chunk_batches(run: ChunkRun, raw: IO[bytes], validator: RecordValidator,
                   stager: Stager, holder: Holder) -> Iterator[PreparedBatch]:
    work = run.work
    # Resume: the records up to the chunk's checkpoint were committed by an earlier run.
    records = dropwhile(lambda r: r.row <= work.checkpoint, _records(run, raw))
    while part := take_batch(records, run.settings.batch_size, raw):
        valid, rejected = validator.validate(part)
        valid, held = holder.split(valid)
        yield PreparedBatch(rejected, stager.stage(valid), checkpoint=part[-1].row,
                            bytes_processed=raw.tell() - work.start_byte, size=len(part),
                            held=held)


def _tail_batches(run: ChunkRun, validator: RecordValidator, stager: Stager
                  ) -> Iterator[PreparedBatch]:
    records = _held(run.progress, run.work.checkpoint)
    while part := list(islice(records, run.settings.batch_size)):
        yield prepare(validator, stager, part, checkpoint=part[-1].row, bytes_processed=0)


def _held(progress: ChunkProgress, after: int) -> Iterator[RawRecord]:
    while page := progress.held_records(after, HELD_PAGE):
        for row, blob in page:
            yield RawRecord(row, orjson.loads(blob), None)
        after = page[-1][0]


def _load(run: ChunkRun, batches: Iterator[PreparedBatch], stager: Stager, loader: Loader,
          data: psycopg.Connection[Any]) -> bool:
    # The records/batch metrics as for one stream (the live rate is this chunk's).
    meter = metrics.JobMeter.for_job("import", run.job.row())
    for batch in batches:
        meter.start()
        with data.transaction():
            rejected = batch.rejected + load_rounds(loader, stager, batch)
            counts = Counter(e.code for rej in rejected for e in rej.errors)
            status = run.progress.commit_batch(data, BatchProgress(
                checkpoint=batch.checkpoint, bytes_processed=batch.bytes_processed,
                processed=batch.size - len(batch.held), rejected=rejected,
                error_counts=dict(counts),
                held=[(r.row, orjson.dumps(r.data)) for r in batch.held]))
        meter.done(batch.size - len(batch.held), len(rejected))
        # One line per committed batch: where each part of a split import ran shows in
        # the logs of the instances (operators follow a job across them).
        log.info("import %s %s batch committed by %s (records to %d, %d rejected)",
                 run.job.id, "tail" if run.work.is_tail else f"chunk {run.work.seq}",
                 run.owner, batch.checkpoint, len(rejected))
        if status is JobStatus.CANCELLED:
            log.info("import %s chunk %d cancelled at record %d", run.job.id, run.work.seq,
                     batch.checkpoint)
            return False
        if run.progress.stop_requested():
            log.info("import %s chunk %d handed back at record %d", run.job.id,
                     run.work.seq, batch.checkpoint)
            return False
    return True
