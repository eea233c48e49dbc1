"""Load stage: staged rounds into PostgreSQL, set-based, inside the caller's transaction.

Two paths, both set-based:

* **Fast path** (insert mode): the round is COPYed straight into the table under
  a savepoint — exactly what raw loading costs. Rows whose id or key may repeat
  one this job already loaded (the stage's filter, :mod:`bulkport.pipeline.stage`)
  are probed first, so in-file duplicates don't break the COPY. When the COPY
  still hits a constraint (a key stored before the job, a missing reference),
  one query probes the round's ids, natural keys and references as typed arrays
  and returns only the rows that would be rejected, and the others are COPYed.
  After a refused COPY the next batches probe first (doubling the stretch after
  each refusal), so files with many conflicts don't pay for a wasted COPY per
  batch. ``INSERT … ON CONFLICT`` would cost about 1.6x a COPY and a probe per
  batch about 1.3x (bench/README.md).
* **Statement path** (upsert mode, and insert mode when the fast path's COPY hits
  a constraint because a concurrent writer took a key after the probe): COPY into
  a temporary staging table, then one CTE statement writes the good rows and
  returns the rejected ones with their reasons (``bulkport.sql.loading``).

Rows that path cannot settle (``retry``) are loaded again one at a time; if a
statement fails outright (a value PostgreSQL refuses), the round is isolated
record by record under savepoints, so good records are never dropped with a
bad one. :func:`load_rounds` loads a batch's rounds in order.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from bulkport.pipeline.stage import Stager, staging_text
from bulkport.pipeline.types import (
    Key,
    PreparedBatch,
    RecordError,
    Rejected,
    StagedRound,
    ValidRecord,
)
from bulkport.resources import Resource
from bulkport.resources.base import NULL, truncate_value
from bulkport.resources.compile import copy_unescape
from bulkport.sql.loading import LoadSQL, load_sql

log = logging.getLogger(__name__)

#: Errors that mean the server or connection is in trouble, not the data.
TRANSIENT_ERRORS = (psycopg.OperationalError, pg_errors.SerializationFailure,
                    pg_errors.DeadlockDetected)
#: Cap of the stretch of probe-first batches after refused optimistic COPYs.
MAX_PROBE_STRETCH = 64
#: Tries of one record that a concurrent writer keeps beating to its key.
ISOLATE_ATTEMPTS = 3

Errors = dict[int, list[RecordError]]


def load_rounds(loader: Loader, stager: Stager, batch: PreparedBatch,
                staged: list[StagedRound] | None = None) -> list[Rejected]:
    """Load a batch, then its deferred repeats round by round; return the DB's rejections.

    ``staged``, when given, receives each round (the preview shows their rows).
    """
    rejected: list[Rejected] = []
    current = batch.staged
    while True:
        if staged is not None:
            staged.append(current)
        found = loader.load(current)
        records = current.by_row(found.keys())
        rejected += [Rejected(row, records[row].original, errs) for row, errs in found.items()]
        if not current.deferred:
            return rejected
        current = stager.stage(current.deferred)


class Loader:
    """Loads rounds of one resource in one mode over one connection."""

    def __init__(self, conn: psycopg.Connection[Any], resource: Resource, mode: str) -> None:
        self.conn = conn
        self.resource = resource
        self.mode = mode
        self.sql: LoadSQL = load_sql(resource.name, mode)
        names = resource.column_names
        self._ref_index = [names.index(f.name) for f in resource.references]
        self._key_parts = len(resource.natural_key)
        self._messages = self._build_messages(resource)
        self._refusals = 0  # optimistic COPYs refused so far
        self._probe_first = 0  # batches left that probe before copying
        conn.execute(self.sql.create_stage)

    @staticmethod
    def _build_messages(resource: Resource) -> dict[str, tuple[str | None, str, str]]:
        key = resource.key_name
        msgs: dict[str, tuple[str | None, str, str]] = {
            "dup_id": ("id", "duplicate_id", "a record with this id already exists"),
            "dup_key": (key, f"duplicate_{key.replace(',', '_')}",
                        f"a record with this {' and '.join(resource.natural_key)} "
                        "already exists"),
        }
        for f in resource.references:
            msgs[f"bad_{f.name}"] = (
                f.name, f"invalid_{f.name}", f"{f.name} does not reference an existing "
                f"{(f.references or '').rstrip('s')}",
            )
        return msgs

    def load(self, staged: StagedRound) -> Errors:
        """Write the round's records; return the database's rejections by record number."""
        if not staged.records:
            return {}
        if self.mode == "insert" and staged.payload is not None:
            try:
                with self.conn.transaction():
                    return self._fast(staged)
            except TRANSIENT_ERRORS:
                raise
            except psycopg.Error as exc:
                log.info("fast path refused the batch (%s); using the statement path",
                         exc.sqlstate)
            return self._statement(staged.records)
        return self._statement(staged.records, payload=staged.payload)

    # --- fast path ----------------------------------------------------------------

    def _fast(self, staged: StagedRound) -> Errors:
        records, payload = staged.records, staged.payload
        assert payload is not None
        cur = self.conn.cursor()
        if self._probe_first:
            self._probe_first -= 1
        else:
            rejected: Errors = {}
            skip: set[int] = set()
            if staged.candidates:
                # Rows repeating an id or key this job already loaded: probe just those.
                rejected, skip = self._probe(cur, records, staged.keys, staged.candidates)
            if len(skip) == len(records):
                # Every row repeats a stored one (a round of in-batch repeats, as a rule):
                # nothing to copy, so no savepoint and no COPY of nothing.
                return rejected
            try:
                with self.conn.transaction():
                    self._copy(cur, payload, skip)
                return rejected
            except (pg_errors.UniqueViolation, pg_errors.ForeignKeyViolation):
                self._refusals += 1
                self._probe_first = min(2 ** self._refusals, MAX_PROBE_STRETCH)
        rejected, skip = self._probe(cur, records, staged.keys, range(len(records)))
        if len(skip) < len(records):
            self._copy(cur, payload, skip)
        return rejected

    def _probe(self, cur: psycopg.Cursor[Any], records: list[ValidRecord],
               keys: list[Key | None], which: Sequence[int]) -> tuple[Errors, set[int]]:
        """Probe the records at indexes ``which``; return their rejections and their indexes."""
        params: list[list[Any]] = [[records[i].values[0] for i in which]]
        if self._key_parts == 1:
            params.append([keys[i] for i in which])
        elif self._key_parts:
            params += [[keys[i][p] for i in which]  # type: ignore[index]
                       for p in range(self._key_parts)]
        params += [[copy_unescape(records[i].values[c]) for i in which]  # type: ignore[arg-type]
                   for c in self._ref_index]
        cur.execute(self.sql.probe, params, binary=True)
        rejected: Errors = {}
        skip: set[int] = set()
        names = self.sql.probe_flags
        for rec in cur.fetchall():
            idx = which[rec[0] - 1]
            record = records[idx]
            skip.add(idx)
            errors = self._errors(record, dict(zip(names, rec[1:], strict=True)))
            assert errors, "the probe returns only rows with a reason"
            rejected[record.row] = errors
        return rejected, skip

    def _copy(self, cur: psycopg.Cursor[Any], payload: str, skip: Collection[int]) -> None:
        """COPY the round's payload (one line per row) but the lines at ``skip`` indexes."""
        if skip:
            lines = payload.split("\n")  # the last element is the "" after the final newline
            # Deleted in place from the end: a few rows of thousands, and no Python loop
            # over the kept ones (this thread's CPU is taken from the parse thread's).
            for i in sorted(skip, reverse=True):
                del lines[i]
            payload = "\n".join(lines)
        with cur.copy(self.sql.copy_target) as copy:
            copy.write(payload)  # rendered by the stage, off this thread's path

    # --- statement path -------------------------------------------------------------

    def _statement(self, records: Sequence[ValidRecord], first: bool = True,
                   payload: str | None = None) -> Errors:
        by_row = {r.row: r for r in records}
        try:
            with self.conn.transaction():
                result = self._run(records, payload)
        except TRANSIENT_ERRORS:
            raise
        except psycopg.Error as exc:
            log.info("batch statement failed (%s); isolating records", exc.sqlstate)
            return self._isolate(records)
        rejected: Errors = {}
        retry: list[ValidRecord] = []
        for row, flags in result:
            errors = self._errors(by_row[row], flags)
            if errors is None:
                retry.append(by_row[row])
            else:
                rejected[row] = errors
        retry.sort(key=lambda r: r.row)  # file order: a retried row may wait for another
        if retry and first and len(retry) > 1:
            # Mostly keys a concurrent import wrote after our snapshot (the statement
            # waited for it to commit): a second set-based pass sees them and updates.
            # Record by record, an overlap of two upserts ran at a few hundred rows/s.
            rejected.update(self._statement(retry, first=False))
        elif retry:
            rejected.update(self._isolate(retry))
        return rejected

    def _run(self, records: Sequence[ValidRecord], payload: str | None = None
             ) -> list[tuple[int, dict[str, bool]]]:
        """Stage ``records`` (``payload``: their staging text, when already rendered), run
        the statement; return ``(row, flags)`` of the records it did not write."""
        cur = self.conn.cursor()
        cur.execute(self.sql.truncate_stage)
        with cur.copy(self.sql.copy_stage) as copy:
            copy.write(payload if payload is not None else staging_text(records))
        cur.execute(self.sql.statement)
        names = self.sql.flags
        return [(rec[0], dict(zip(names, rec[1:], strict=True))) for rec in cur.fetchall()]

    def _errors(self, record: ValidRecord, flags: dict[str, bool]) -> list[RecordError] | None:
        errors = []
        for name, hit in flags.items():
            if hit and name != "retry":
                field, code, message = self._messages[name]
                errors.append(RecordError(record.row, field, self._value(record, field), code,
                                          message))
        if errors:
            return errors
        return None  # only "retry" (or nothing) set: load it again on its own

    def _value(self, record: ValidRecord, field: str | None) -> Any:
        """The value an error names: one field's, or each key field's for a composite key."""
        if field is None:
            return None
        if field == self.resource.key_name and self._key_parts > 1:
            return {n: self._value(record, n) for n in self.resource.natural_key}
        value = record.value(field)
        return None if value == NULL or value is None else truncate_value(copy_unescape(value))

    def _isolate(self, records: Sequence[ValidRecord]) -> Errors:
        """Load records one by one under savepoints; a record that still fails is rejected."""
        rejected: Errors = {}
        for r in records:
            row = r.row
            for _ in range(ISOLATE_ATTEMPTS):
                try:
                    with self.conn.transaction():
                        result = self._run([r])
                except TRANSIENT_ERRORS:
                    raise
                except psycopg.Error as exc:
                    diag = exc.diag
                    rejected[row] = [RecordError(
                        row, diag.column_name, None, "rejected_by_database",
                        f"the database refused the record: {diag.message_primary or exc}",
                    )]
                    break
                # Alone, "retry" means a concurrent writer took the key while we waited
                # for it; the next attempt sees its row. Rejecting a good record is worse.
                if not result or self._errors(r, result[0][1]) is not None:
                    break
            if row in rejected:
                continue
            if result:
                errors = self._errors(r, result[0][1])
                rejected[row] = errors or [RecordError(
                    row, None, None, "conflict",
                    "the record conflicts with a row written concurrently; retry it",
                )]
        return rejected
