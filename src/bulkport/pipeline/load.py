"""Load stage: a prepared batch into PostgreSQL, set-based, inside the caller's transaction.

Two paths, both set-based:

* **Fast path** (insert mode): the batch is COPYed straight into the table under
  a savepoint — exactly what raw loading costs. Rows whose id or key may repeat
  one this job already loaded (a filter kept by the prepare stage) are probed
  first, so in-file duplicates don't break the COPY. When the COPY still hits a
  constraint (a key stored before the job, a missing reference), one query
  probes the batch's ids, natural keys and references as typed arrays and
  returns only the rows that would be rejected, and the others are COPYed. After a refused COPY the
  next batches probe first (doubling the stretch after each refusal), so files
  with many conflicts don't pay for a wasted COPY per batch. ``INSERT … ON
  CONFLICT`` would cost about 1.6x a COPY and a probe per batch about 1.3x
  (bench/README.md).
* **Statement path** (upsert mode, and insert mode when the fast path's COPY hits
  a constraint because a concurrent writer took a key after the probe): COPY into
  a temporary staging table, then one CTE statement writes the good rows and
  returns the rejected ones with their reasons (``bulkport.sql.loading``).

Rows that path cannot settle (``retry``) are loaded again one at a time; if a
statement fails outright (a value PostgreSQL refuses), the batch is isolated
record by record under savepoints, so good records are never dropped with a
bad one.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from bulkport.pipeline.types import PreparedBatch, RecordError
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

Row = list[str]


class Loader:
    """Loads batches of one resource in one mode over one connection."""

    def __init__(self, conn: psycopg.Connection[Any], resource: Resource, mode: str) -> None:
        self.conn = conn
        self.resource = resource
        self.mode = mode
        self.sql: LoadSQL = load_sql(resource.name, mode)
        names = resource.column_names
        self._defaults = [(names.index(f.name), f.insert_default) for f in resource.fields
                          if f.insert_default]
        self._ref_index = [names.index(f.name) for f in resource.references]
        self._messages = self._build_messages(resource)
        self._refusals = 0  # optimistic COPYs refused so far
        self._probe_first = 0  # batches left that probe before copying
        conn.execute(self.sql.create_stage)

    @staticmethod
    def _build_messages(resource: Resource) -> dict[str, tuple[str | None, str, str]]:
        nk = resource.natural_key
        msgs: dict[str, tuple[str | None, str, str]] = {
            "dup_id": ("id", "duplicate_id", "a record with this id already exists"),
            "dup_key": (nk, f"duplicate_{nk}", f"a record with this {nk} already exists"),
        }
        for f in resource.references:
            msgs[f"bad_{f.name}"] = (
                f.name, f"invalid_{f.name}", f"{f.name} does not reference an existing "
                f"{(f.references or '').rstrip('s')}",
            )
        return msgs

    def insert_defaults(self) -> list[tuple[int, str]]:
        """``(column index, COPY text)`` of the insert defaults, evaluated now.

        Evaluated once per job (so ``now()`` is the job's start for every record
        that leaves ``created_at`` empty) and applied while batches are prepared.
        """
        if not self._defaults:
            return []
        values = self.conn.execute(self.sql.defaults).fetchone()
        assert values is not None
        return [(i, v) for (i, _), v in zip(self._defaults, values, strict=True)]

    def load(self, batch: PreparedBatch) -> dict[int, list[RecordError]]:
        """Write the batch's clean rows; return the database's rejections by row number."""
        rows = batch.rows
        if not rows:
            return {}
        if self.mode == "insert" and batch.payload is not None:
            try:
                with self.conn.transaction():
                    return self._fast(batch)
            except TRANSIENT_ERRORS:
                raise
            except psycopg.Error as exc:
                log.info("fast path refused the batch (%s); using the statement path",
                         exc.sqlstate)
        return self._statement(rows)

    # --- fast path ----------------------------------------------------------------

    def _fast(self, batch: PreparedBatch) -> dict[int, list[RecordError]]:
        rows, payload = batch.rows, batch.payload
        assert payload is not None
        cur = self.conn.cursor()
        if self._probe_first:
            self._probe_first -= 1
        else:
            rejected: dict[int, list[RecordError]] = {}
            skip: set[int] = set()
            if batch.candidates:
                # Rows repeating an id or key this job already loaded: probe just those.
                rejected, skip = self._probe(cur, rows, batch.keys, batch.candidates)
            try:
                with self.conn.transaction():
                    self._copy(cur, payload, skip)
                return rejected
            except (pg_errors.UniqueViolation, pg_errors.ForeignKeyViolation):
                self._refusals += 1
                self._probe_first = min(2 ** self._refusals, MAX_PROBE_STRETCH)
        rejected, skip = self._probe(cur, rows, batch.keys, range(len(rows)))
        self._copy(cur, payload, skip)
        return rejected

    def _probe(self, cur: psycopg.Cursor[Any], rows: list[Row], keys: list[str | None],
               which: Sequence[int]) -> tuple[dict[int, list[RecordError]], set[int]]:
        """Probe the rows at indexes ``which``; return their rejections and their indexes."""
        params: list[list[Any]] = [[rows[i][0] for i in which]]
        if self.resource.natural_key:
            params.append([keys[i] for i in which])
        params += [[copy_unescape(rows[i][c]) for i in which] for c in self._ref_index]
        cur.execute(self.sql.probe, params, binary=True)
        rejected: dict[int, list[RecordError]] = {}
        skip: set[int] = set()
        names = self.sql.probe_flags
        for rec in cur.fetchall():
            idx = which[rec[0] - 1]
            row = rows[idx]
            skip.add(idx)
            errors = self._errors(row, dict(zip(names, rec[1:], strict=True)))
            assert errors, "the probe returns only rows with a reason"
            rejected[int(row[-2])] = errors
        return rejected, skip

    def _copy(self, cur: psycopg.Cursor[Any], payload: str, skip: Collection[int]) -> None:
        """COPY the batch's payload (one line per row) but the lines at ``skip`` indexes."""
        if skip:
            lines = payload.split("\n")  # the last element is the "" after the final newline
            payload = "\n".join([x for i, x in enumerate(lines) if i not in skip])
        with cur.copy(self.sql.copy_target) as copy:
            copy.write(payload)  # rendered by the prepare stage, off this thread's path

    # --- statement path -------------------------------------------------------------

    def _statement(self, rows: Sequence[Row], first: bool = True
                   ) -> dict[int, list[RecordError]]:
        by_row = {int(r[-2]): r for r in rows}
        try:
            with self.conn.transaction():
                result = self._run(rows)
        except TRANSIENT_ERRORS:
            raise
        except psycopg.Error as exc:
            log.info("batch statement failed (%s); isolating records", exc.sqlstate)
            return self._isolate(rows)
        rejected: dict[int, list[RecordError]] = {}
        retry: list[Row] = []
        for row, flags in result:
            errors = self._errors(by_row[row], flags)
            if errors is None:
                retry.append(by_row[row])
            else:
                rejected[row] = errors
        retry.sort(key=lambda r: int(r[-2]))  # file order: a retried row may wait for another
        if retry and first and len(retry) > 1:
            # Mostly keys a concurrent import wrote after our snapshot (the statement
            # waited for it to commit): a second set-based pass sees them and updates.
            # Record by record, an overlap of two upserts ran at a few hundred rows/s.
            rejected.update(self._statement(retry, first=False))
        elif retry:
            rejected.update(self._isolate(retry))
        return rejected

    def _run(self, rows: Sequence[Row]) -> list[tuple[int, dict[str, bool]]]:
        cur = self.conn.cursor()
        cur.execute(self.sql.truncate_stage)
        with cur.copy(self.sql.copy_stage) as copy:
            copy.write("".join("\t".join(r) + "\n" for r in rows))
        cur.execute(self.sql.statement)
        names = self.sql.flags
        return [(rec[0], dict(zip(names, rec[1:], strict=True))) for rec in cur.fetchall()]

    def _errors(self, row: Row, flags: dict[str, bool]) -> list[RecordError] | None:
        errors = []
        for name, hit in flags.items():
            if hit and name != "retry":
                field, code, message = self._messages[name]
                errors.append(RecordError(int(row[-2]), field, self._value(row, field), code,
                                          message))
        if errors:
            return errors
        return None  # only "retry" (or nothing) set: load it again on its own

    def _value(self, row: Row, field: str | None) -> Any:
        if field is None:
            return None
        value = row[self.resource.column_names.index(field)]
        return None if value == NULL else truncate_value(copy_unescape(value))

    def _isolate(self, rows: Sequence[Row]) -> dict[int, list[RecordError]]:
        """Load rows one by one under savepoints; a row that still fails is rejected."""
        rejected: dict[int, list[RecordError]] = {}
        for r in rows:
            row = int(r[-2])
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
